//! Counters and ledger in Redis, shared by every xds-server that uses the same Redis and key
//! prefix, and kept across restarts. Admission is one Lua script (check every counter, then
//! `INCRBY` + `EXPIREAT` all of them, or none), corrections another; counter keys expire with
//! their window. The ledger is a hash per day, tenant and model (`HINCRBY`) and a set per day
//! naming them, both kept about 400 days. One multiplexed connection (`ConnectionManager`),
//! opened on first use and reopened after failures; every operation is bounded by
//! [`OPERATION_TIMEOUT`]. Standalone Redis (or a primary): the script touches several keys,
//! which Redis Cluster only allows within one hash slot.

use std::{collections::HashMap, future::Future, time::Duration};

use ::redis::{
    Client, IntoConnectionInfo, RedisError, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tonic::async_trait;

use super::{
    Adjustment, Admission, Charge, CounterStore, LedgerEntry, StoreError, UsageKey, UsageLedger,
    UsageTotals,
};
use crate::quota::{
    RedisSettings,
    keys::{parse_usage_member, usage_hash_key, usage_index_key, usage_member},
};

/// Longest wait for one store operation; the caller then gets an error (and the filter applies
/// its failure mode, usually sooner).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

const ADMIT_SCRIPT: &str = r"
-- KEYS[i]: counters. ARGV[3i-2]: hits, ARGV[3i-1]: limit (-1: never refuses),
-- ARGV[3i]: when the window ends (Unix seconds). Returns {admitted, count...}.
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

const FIELDS: [&str; 4] = ["requests", "input_tokens", "output_tokens", "refusals"];

pub struct RedisStore {
    connection: ConnectionManager,
    admit: Script,
    adjust: Script,
    prefix: String,
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
            prefix: settings.key_prefix.clone(),
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
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = self
            .run("admit", invocation.invoke_async(&mut connection))
            .await?;
        match reply.split_first() {
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

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: String = self
            .run("ping", ::redis::cmd("PING").query_async(&mut connection))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl UsageLedger for RedisStore {
    async fn record(&self, entries: &[LedgerEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for entry in entries {
            let key = &entry.key;
            let hash = usage_hash_key(&self.prefix, &key.day, &key.tenant, &key.model);
            let index = usage_index_key(&self.prefix, &key.day);
            let totals = &entry.totals;
            let values = [
                totals.requests,
                totals.input_tokens,
                totals.output_tokens,
                totals.refusals,
            ];
            for (field, value) in FIELDS.into_iter().zip(values) {
                pipe.hincr(&hash, field, i64::try_from(value).unwrap_or(i64::MAX))
                    .ignore();
            }
            pipe.expire_at(&hash, entry.expire_at).ignore();
            pipe.sadd(&index, usage_member(&key.tenant, &key.model))
                .ignore();
            pipe.expire_at(&index, entry.expire_at).ignore();
        }
        let mut connection = self.connection.clone();
        self.run("record usage", pipe.query_async::<()>(&mut connection))
            .await
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
                };
                (key, totals)
            })
            .collect())
    }
}
