//! Counters and ledger in Redis, shared by every xds-server that uses the same Redis and key
//! prefix, and kept across restarts. Admission is one Lua script (check every counter, then
//! `INCRBY` + `EXPIREAT` all of them, or none), refunds another; counter keys expire with
//! their window. The ledger is a hash per day, tenant and model and a set per day naming them,
//! both kept about 400 days. A usage report is one more script: it records the report's id
//! (kept an hour), corrects the counters and adds to the ledger, or, when the id is known,
//! does nothing; it checks every key it touches before its first write, as Redis does not undo
//! a script that fails half-way. Every key has a time to live, so Redis' own `maxmemory` bounds
//! the store. One multiplexed connection (`ConnectionManager`), opened on first use and
//! reopened after failures; every operation is bounded by [`OPERATION_TIMEOUT`].
//!
//! A command xds-server gave up on is not lost: it waits in the connection (a stalled Redis, a
//! cut network that TCP later bridges) and Redis runs it when it gets it. For a report that is
//! harmless (its id makes it count once), but an admission run then would charge a request
//! whose caller was long told otherwise (it failed open or closed). So each admission carries
//! a deadline, the moment xds-server stops waiting for it, in Redis's clock (the offset between
//! the clocks is measured by every health check, `TIME`): the script refuses to count after
//! it. Until the first health check there is no deadline. Standalone
//! Redis (or a primary): the scripts touch several keys, which Redis Cluster only allows within
//! one hash slot.

use std::{
    collections::HashMap,
    future::Future,
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, Instant, SystemTime},
};

use ::redis::{
    Client, IntoConnectionInfo, RedisError, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tonic::async_trait;

use super::{
    Adjustment, Admission, Charge, CounterStore, MAX_COUNT, OTHER_MODEL, REPORT_ID_TTL_SECONDS,
    Report, ReportOutcome, StoreError, UsageKey, UsageLedger, UsageTotals,
};
use crate::quota::{
    keys::{parse_usage_member, report_key, usage_hash_key, usage_index_key, usage_member},
    settings::RedisSettings,
};
use crate::util::time::unix_millis;

/// Longest wait for one store operation; the caller then gets an error (and the filter applies
/// its failure mode, usually sooner).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A clock offset measured over a round trip longer than this is not trusted.
const OFFSET_ROUND_TRIP: Duration = Duration::from_millis(200);
/// Added to an admission's deadline for the error of the measured clock offset.
const DEADLINE_MARGIN_MS: i64 = 250;
/// `clock_offset_ms` before the first measurement.
const UNKNOWN_OFFSET: i64 = i64::MIN;

const ADMIT_SCRIPT: &str = r"
-- KEYS[i]: counters. ARGV[3i-2]: hits, ARGV[3i-1]: limit (-1: never refuses),
-- ARGV[3i]: when the window ends (Unix seconds); the last ARGV: the deadline (Unix
-- milliseconds in this server's clock, 0: none). Returns {admitted, count...}, or {-1} when
-- run after the deadline (nothing counted: the caller has given up on the answer).
local deadline = tonumber(ARGV[#ARGV])
if deadline > 0 then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
    return {-1}
  end
end
local counts, pending, admitted = {}, {}, 1
for i, key in ipairs(KEYS) do
  local hits = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local count = tonumber(redis.call('GET', key) or '0')
  counts[i] = count
  local before = count + (pending[key] or 0)
  pending[key] = (pending[key] or 0) + hits
  if limit >= 0 then
    if (hits == 0 and before >= limit) or (hits > 0 and before + hits > limit) then
      admitted = 0
    end
  end
end
if admitted == 1 then
  for i, key in ipairs(KEYS) do
    local hits = tonumber(ARGV[3 * i - 2])
    if hits > 0 then
      counts[i] = redis.call('INCRBY', key, hits)
      redis.call('EXPIREAT', key, ARGV[3 * i])
    end
  end
end
table.insert(counts, 1, admitted)
return counts
";

const ADJUST_SCRIPT: &str = r"
-- KEYS[i]: counters. ARGV[2i-1]: delta, ARGV[2i]: when the window ends.
-- Returns the counts after, -1 where nothing was changed: a refund to a missing counter, or
-- a charge to a window that has ended (EXPIREAT in the past deletes the key at once).
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 or tonumber(ARGV[2 * i - 1]) > 0 then
    local count = redis.call('INCRBY', key, ARGV[2 * i - 1])
    if count < 0 then
      redis.call('SET', key, 0)
      count = 0
    end
    redis.call('EXPIREAT', key, ARGV[2 * i])
    if redis.call('EXISTS', key) == 1 then
      out[i] = count
    else
      out[i] = -1
    end
  else
    out[i] = -1
  end
end
return out
";

const REPORT_SCRIPT: &str = r"
-- One usage report, applied once. KEYS: the report id's key when ARGV[1] is 1; then one
-- counter per correction; then per ledger entry its day's index set, its hash and the hash
-- of its tenant's (other) row. ARGV: has id (0/1), the id's time to live (seconds), number of
-- corrections, number of ledger entries, rows a day may have; per correction: delta, when its
-- window ends; per ledger entry: index member, (other) member, expiry, then requests,
-- input_tokens, output_tokens, refusals, gateway_refusals, cache_read_tokens,
-- cache_write_tokens, cost_nano_usd (FIELDS' order; a row written before a field existed
-- reads it as 0).
-- Returns {applied (0: a duplicate), records collapsed into (other) rows, count...}, -1 for a
-- correction that changed nothing (a refund to a missing counter, a window that has ended).
local MAX = 9007199254740991
local FIELDS = {'requests', 'input_tokens', 'output_tokens', 'refusals', 'gateway_refusals',
                'cache_read_tokens', 'cache_write_tokens', 'cost_nano_usd'}
local PER_ENTRY = 3 + #FIELDS
local has_id = ARGV[1] == '1'
local adjustments = tonumber(ARGV[3])
local entries = tonumber(ARGV[4])
local max_rows = tonumber(ARGV[5])
local first = 0
if has_id then first = 1 end
if adjustments == nil or entries == nil or max_rows == nil
    or #KEYS ~= first + adjustments + 3 * entries
    or #ARGV ~= 5 + 2 * adjustments + PER_ENTRY * entries then
  return redis.error_reply('report: malformed call')
end
if has_id and redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, 0}
end
local ledger_args = 5 + 2 * adjustments
local function kind(key)
  return redis.call('TYPE', key)['ok']
end
-- Everything is checked before the first write: Redis does not undo a script that fails.
for i = 1, adjustments do
  local key = KEYS[first + i]
  if tonumber(ARGV[4 + 2 * i]) == nil or tonumber(ARGV[5 + 2 * i]) == nil then
    return redis.error_reply('report: malformed call')
  end
  local t = kind(key)
  if t == 'string' then
    if tonumber(redis.call('GET', key)) == nil then
      return redis.error_reply('report: ' .. key .. ' does not hold a count')
    end
  elseif t ~= 'none' then
    return redis.error_reply('report: ' .. key .. ' holds a ' .. t .. ', not a count')
  end
end
for j = 1, entries do
  local base = first + adjustments + 3 * (j - 1)
  local a = ledger_args + PER_ENTRY * (j - 1)
  for f = 3, PER_ENTRY do
    if tonumber(ARGV[a + f]) == nil then
      return redis.error_reply('report: malformed call')
    end
  end
  local t = kind(KEYS[base + 1])
  if t ~= 'none' and t ~= 'set' then
    return redis.error_reply('report: ' .. KEYS[base + 1] .. ' holds a ' .. t .. ', not a set')
  end
  for h = 2, 3 do
    local hash = KEYS[base + h]
    t = kind(hash)
    if t == 'hash' then
      local values = redis.call('HMGET', hash, unpack(FIELDS))
      for f = 1, #FIELDS do
        if values[f] and tonumber(values[f]) == nil then
          return redis.error_reply('report: ' .. hash .. ' holds a ' .. FIELDS[f] .. ' that is no count')
        end
      end
    elseif t ~= 'none' then
      return redis.error_reply('report: ' .. hash .. ' holds a ' .. t .. ', not a hash')
    end
  end
end
if has_id then
  redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2])
end
local out = {1, 0}
for i = 1, adjustments do
  local key = KEYS[first + i]
  local delta = tonumber(ARGV[4 + 2 * i])
  if redis.call('EXISTS', key) == 1 or delta > 0 then
    local count = tonumber(redis.call('GET', key) or '0') + delta
    if count < 0 then count = 0 end
    if count > MAX then count = MAX end
    redis.call('SET', key, string.format('%d', count))
    redis.call('EXPIREAT', key, ARGV[5 + 2 * i])
    if redis.call('EXISTS', key) == 1 then
      out[2 + i] = count
    else
      out[2 + i] = -1
    end
  else
    out[2 + i] = -1
  end
end
for j = 1, entries do
  local base = first + adjustments + 3 * (j - 1)
  local a = ledger_args + PER_ENTRY * (j - 1)
  local index, hash, member = KEYS[base + 1], KEYS[base + 2], ARGV[a + 1]
  if redis.call('SISMEMBER', index, member) == 0
      and redis.call('SCARD', index) >= max_rows then
    if member ~= ARGV[a + 2] then
      out[2] = out[2] + tonumber(ARGV[a + 4]) + tonumber(ARGV[a + 7]) + tonumber(ARGV[a + 8])
    end
    hash, member = KEYS[base + 3], ARGV[a + 2]
  end
  local current = redis.call('HMGET', hash, unpack(FIELDS))
  local values = {}
  for f = 1, #FIELDS do
    local value = (tonumber(current[f]) or 0) + tonumber(ARGV[a + 3 + f])
    if value > MAX then value = MAX end
    values[2 * f - 1] = FIELDS[f]
    values[2 * f] = string.format('%d', value)
  end
  redis.call('HSET', hash, unpack(values))
  redis.call('EXPIREAT', hash, ARGV[a + 3])
  redis.call('SADD', index, member)
  redis.call('EXPIREAT', index, ARGV[a + 3])
end
return out
";

/// The ledger hash's fields, in the order of REPORT_SCRIPT's FIELDS.
const FIELDS: [&str; 8] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "refusals",
    "gateway_refusals",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_nano_usd",
];

pub struct RedisStore {
    connection: ConnectionManager,
    admit: Script,
    adjust: Script,
    report: Script,
    prefix: String,
    /// Redis's clock minus this process's, in milliseconds ([`UNKNOWN_OFFSET`] until the first
    /// health check measures it).
    clock_offset_ms: AtomicI64,
}

impl RedisStore {
    /// Prepares the connection (opened on first use: xds-server starts while Redis is down).
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        // `rediss://` uses rustls with its process-wide provider: make it the one the rest of
        // this program uses (a no-op when already installed).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut info = settings
            .url
            .expose()
            .into_connection_info()
            .map_err(|e| error("invalid URL", e))?;
        if let Some(password) = &settings.password {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(redis);
        }
        let client = Client::open(info).map_err(|e| error("invalid URL", e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(OPERATION_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = client
            .get_connection_manager_lazy(config)
            .map_err(|e| error("cannot set up the connection", e))?;
        Ok(Self {
            connection,
            admit: Script::new(ADMIT_SCRIPT),
            adjust: Script::new(ADJUST_SCRIPT),
            report: Script::new(REPORT_SCRIPT),
            prefix: settings.key_prefix.clone(),
            clock_offset_ms: AtomicI64::new(UNKNOWN_OFFSET),
        })
    }

    async fn run<T>(
        &self,
        what: &str,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
            Ok(result) => result.map_err(|e| error(what, e)),
            Err(_) => Err(StoreError(format!(
                "redis: {what}: no answer within {OPERATION_TIMEOUT:?}"
            ))),
        }
    }
}

impl RedisStore {
    /// When xds-server stops waiting for an admission sent now, in Redis's clock (Unix
    /// milliseconds, with a margin for the offset's error); 0 while the offset is unknown.
    fn deadline_ms(&self) -> i64 {
        match self.clock_offset_ms() {
            None => 0,
            Some(offset) => {
                let timeout = i64::try_from(OPERATION_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
                unix_millis(SystemTime::now())
                    .saturating_add(offset)
                    .saturating_add(timeout)
                    .saturating_add(DEADLINE_MARGIN_MS)
            }
        }
    }
}

fn error(what: &str, error: RedisError) -> StoreError {
    StoreError(format!("redis: {what}: {error}"))
}

#[async_trait]
impl CounterStore for RedisStore {
    async fn admit(&self, charges: &[Charge]) -> Result<Admission, StoreError> {
        if charges.is_empty() {
            return Ok(Admission {
                admitted: true,
                counts: Vec::new(),
            });
        }
        let mut invocation = self.admit.prepare_invoke();
        for charge in charges {
            invocation.key(&charge.key);
        }
        for charge in charges {
            let limit = charge
                .limit
                .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
            invocation.arg(charge.hits).arg(limit).arg(charge.expire_at);
        }
        invocation.arg(self.deadline_ms());
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .run("admit", invocation.invoke_async(&mut connection))
            .await?;
        match reply.split_first() {
            Some((-1, [])) => Err(StoreError(
                "redis: admit: run after its deadline (Redis was stalled or unreachable); not counted"
                    .into(),
            )),
            Some((&admitted, counts)) if counts.len() == charges.len() => Ok(Admission {
                admitted: admitted == 1,
                counts: counts
                    .iter()
                    .map(|&c| u64::try_from(c).unwrap_or(0))
                    .collect(),
            }),
            _ => Err(StoreError(format!(
                "redis: admit: unexpected answer {reply:?}"
            ))),
        }
    }

    async fn adjust(&self, adjustments: &[Adjustment]) -> Result<Vec<Option<u64>>, StoreError> {
        if adjustments.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.adjust.prepare_invoke();
        for adjustment in adjustments {
            invocation.key(&adjustment.key);
        }
        for adjustment in adjustments {
            invocation.arg(adjustment.delta).arg(adjustment.expire_at);
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .run("adjust", invocation.invoke_async(&mut connection))
            .await?;
        if reply.len() != adjustments.len() {
            return Err(StoreError(format!(
                "redis: adjust: unexpected answer {reply:?}"
            )));
        }
        Ok(reply.into_iter().map(|c| u64::try_from(c).ok()).collect())
    }

    fn clock_offset_ms(&self) -> Option<i64> {
        match self.clock_offset_ms.load(Ordering::Relaxed) {
            UNKNOWN_OFFSET => None,
            offset => Some(offset),
        }
    }

    /// `TIME`: answers like `PING`, and measures the offset between the clocks.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let sent = Instant::now();
        let local_ms = unix_millis(SystemTime::now());
        let (seconds, micros): (i64, i64) = self
            .run("ping", ::redis::cmd("TIME").query_async(&mut connection))
            .await?;
        let round_trip = sent.elapsed();
        if round_trip <= OFFSET_ROUND_TRIP {
            let redis_ms = seconds * 1000 + micros / 1000;
            let midpoint = local_ms + i64::try_from(round_trip.as_millis() / 2).unwrap_or(0);
            self.clock_offset_ms
                .store(redis_ms - midpoint, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[async_trait]
impl UsageLedger for RedisStore {
    async fn settle(&self, report: &Report) -> Result<ReportOutcome, StoreError> {
        if report.id.is_none() && report.adjustments.is_empty() && report.ledger.is_empty() {
            return Ok(ReportOutcome::default());
        }
        let max = i64::try_from(MAX_COUNT).unwrap_or(i64::MAX);
        let count = |value: u64| i64::try_from(value.min(MAX_COUNT)).unwrap_or(max);
        let mut invocation = self.report.prepare_invoke();
        if let Some(id) = &report.id {
            invocation.key(report_key(&self.prefix, id));
        }
        for adjustment in &report.adjustments {
            invocation.key(&adjustment.key);
        }
        for entry in &report.ledger {
            let key = &entry.key;
            invocation
                .key(usage_index_key(&self.prefix, &key.day))
                .key(usage_hash_key(
                    &self.prefix,
                    &key.day,
                    &key.tenant,
                    &key.model,
                ))
                .key(usage_hash_key(
                    &self.prefix,
                    &key.day,
                    &key.tenant,
                    OTHER_MODEL,
                ));
        }
        invocation
            .arg(u8::from(report.id.is_some()))
            .arg(REPORT_ID_TTL_SECONDS)
            .arg(report.adjustments.len())
            .arg(report.ledger.len())
            .arg(report.max_rows_per_day.max(1));
        for adjustment in &report.adjustments {
            invocation
                .arg(adjustment.delta.clamp(-max, max))
                .arg(adjustment.expire_at);
        }
        for entry in &report.ledger {
            let (key, totals) = (&entry.key, &entry.totals);
            invocation
                .arg(usage_member(&key.tenant, &key.model))
                .arg(usage_member(&key.tenant, OTHER_MODEL))
                .arg(entry.expire_at)
                .arg(count(totals.requests))
                .arg(count(totals.input_tokens))
                .arg(count(totals.output_tokens))
                .arg(count(totals.refusals))
                .arg(count(totals.gateway_refusals))
                .arg(count(totals.cache_read_tokens))
                .arg(count(totals.cache_write_tokens))
                .arg(count(totals.cost_nano_usd));
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .run("report", invocation.invoke_async(&mut connection))
            .await?;
        match reply.as_slice() {
            [0, ..] => Ok(ReportOutcome {
                duplicate: true,
                ..Default::default()
            }),
            [1, collapsed, counts @ ..] if counts.len() == report.adjustments.len() => {
                Ok(ReportOutcome {
                    duplicate: false,
                    counts: counts.iter().map(|&c| u64::try_from(c).ok()).collect(),
                    collapsed: u64::try_from(*collapsed).unwrap_or(0),
                    ids_forgotten: 0,
                })
            }
            _ => Err(StoreError(format!(
                "redis: report: unexpected answer {reply:?}"
            ))),
        }
    }

    async fn query(
        &self,
        days: &[String],
        tenant: Option<&str>,
    ) -> Result<Vec<(UsageKey, UsageTotals)>, StoreError> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let mut connection = self.connection.clone();
        let mut pipe = ::redis::pipe();
        for day in days {
            pipe.smembers(usage_index_key(&self.prefix, day));
        }
        let members: Vec<Vec<String>> = self
            .run("read usage", pipe.query_async(&mut connection))
            .await?;
        let mut keys = Vec::new();
        for (day, members) in days.iter().zip(members) {
            for member in members {
                if let Some((row_tenant, model)) = parse_usage_member(&member)
                    && tenant.is_none_or(|t| t == row_tenant)
                {
                    keys.push(UsageKey {
                        day: day.clone(),
                        tenant: row_tenant,
                        model,
                    });
                }
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for key in &keys {
            pipe.hgetall(usage_hash_key(
                &self.prefix,
                &key.day,
                &key.tenant,
                &key.model,
            ));
        }
        let hashes: Vec<HashMap<String, i64>> = self
            .run("read usage", pipe.query_async(&mut connection))
            .await?;
        Ok(keys
            .into_iter()
            .zip(hashes)
            // A hash that expired before its index is no row.
            .filter(|(_, hash)| !hash.is_empty())
            .map(|(key, hash)| {
                let field = |name: &str| {
                    hash.get(name)
                        .and_then(|&v| u64::try_from(v).ok())
                        .unwrap_or(0)
                };
                let totals = UsageTotals {
                    requests: field(FIELDS[0]),
                    input_tokens: field(FIELDS[1]),
                    output_tokens: field(FIELDS[2]),
                    refusals: field(FIELDS[3]),
                    gateway_refusals: field(FIELDS[4]),
                    cache_read_tokens: field(FIELDS[5]),
                    cache_write_tokens: field(FIELDS[6]),
                    cost_nano_usd: field(FIELDS[7]),
                };
                (key, totals)
            })
            .collect())
    }
}
