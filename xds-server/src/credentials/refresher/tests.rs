use std::{collections::VecDeque, time::UNIX_EPOCH};

use super::*;
use crate::{credentials::FetchFuture, util::Secret};

const MINUTE: Duration = Duration::from_secs(60);

/// Wall clock that follows tokio's (pausable) clock from a fixed start.
struct TestClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            start: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// Hands out scripted results (the last one repeats) and records when it was asked.
struct ScriptedSource {
    script: Mutex<VecDeque<Result<Credentials, CredentialsError>>>,
    clock: Arc<TestClock>,
    fetched_at: Mutex<Vec<Duration>>,
}

impl ScriptedSource {
    fn new(
        clock: &Arc<TestClock>,
        script: Vec<Result<Credentials, CredentialsError>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            clock: Arc::clone(clock),
            fetched_at: Mutex::new(Vec::new()),
        })
    }

    /// Offsets from the start at which fetches happened.
    fn fetches(&self) -> Vec<Duration> {
        lock(&self.fetched_at).clone()
    }
}

impl CredentialSource for ScriptedSource {
    fn fetch(&self) -> FetchFuture<'_> {
        lock(&self.fetched_at).push(self.clock.start.elapsed());
        let mut script = lock(&self.script);
        let result = if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        };
        let result =
            result.unwrap_or_else(|| Err(CredentialsError::Unavailable("empty script".into())));
        Box::pin(async move { result })
    }
}

fn credentials(key: &str, expires_at: Option<SystemTime>) -> Credentials {
    Credentials {
        access_key_id: key.to_string(),
        secret_access_key: Secret::new(format!("secret-of-{key}")),
        session_token: expires_at.map(|_| Secret::new("token")),
        expires_at,
        provider: "test".into(),
    }
}

fn start(
    source: Arc<ScriptedSource>,
    clock: &Arc<TestClock>,
) -> (
    Arc<CredentialStore>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let store = Arc::new(CredentialStore::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_refresher(
        source,
        Arc::clone(&store),
        Arc::clone(clock) as Arc<dyn Clock>,
        shutdown.clone(),
    ));
    (store, shutdown, task)
}

#[test]
fn delay_before_the_next_refresh() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let cases = [
        (None, LONG_TERM_REFRESH),
        (Some(60 * MINUTE), 55 * MINUTE),
        (Some(20 * MINUTE), 15 * MINUTE),
        (Some(6 * MINUTE), 3 * MINUTE),
        (Some(Duration::from_secs(10)), Duration::from_secs(5)),
        (Some(Duration::from_secs(1)), MIN_DELAY),
        (Some(Duration::ZERO), MIN_DELAY),
    ];
    for (lifetime, expected) in cases {
        assert_eq!(
            refresh_delay(now, lifetime.map(|l| now + l)),
            expected,
            "{lifetime:?}"
        );
    }
    // Already expired: as soon as allowed.
    assert_eq!(refresh_delay(now, Some(now - MINUTE)), MIN_DELAY);
}

#[tokio::test(start_paused = true)]
async fn expiring_credentials_are_refreshed_before_they_expire() {
    let clock = TestClock::new();
    let t0 = clock.now();
    let source = ScriptedSource::new(
        &clock,
        vec![
            Ok(credentials("AKIDFIRST", Some(t0 + 20 * MINUTE))),
            Ok(credentials("AKIDSECOND", Some(t0 + 75 * MINUTE))),
        ],
    );
    let (store, shutdown, task) = start(Arc::clone(&source), &clock);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.current(clock.now()).unwrap().access_key_id,
        "AKIDFIRST"
    );
    assert_eq!(store.next_refresh_at(), Some(t0 + 15 * MINUTE));

    tokio::time::sleep(15 * MINUTE).await;
    assert_eq!(source.fetches(), [Duration::ZERO, 15 * MINUTE]);
    assert_eq!(
        store.current(clock.now()).unwrap().access_key_id,
        "AKIDSECOND"
    );
    // 60 minutes left at 15: refreshed 5 minutes before the end.
    assert_eq!(store.next_refresh_at(), Some(t0 + 70 * MINUTE));
    let status = store.status(clock.now());
    assert_eq!((status.refreshes, status.refresh_failures), (2, 0));
    assert_eq!(status.access_key_id_prefix.as_deref(), Some("AKID"));

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn long_term_credentials_are_read_again_every_15_minutes() {
    let clock = TestClock::new();
    let source = ScriptedSource::new(&clock, vec![Ok(credentials("AKIDLONG", None))]);
    let (store, shutdown, task) = start(Arc::clone(&source), &clock);
    tokio::time::sleep(31 * MINUTE).await;
    assert_eq!(source.fetches(), [Duration::ZERO, 15 * MINUTE, 30 * MINUTE]);
    assert!(
        store.current(clock.now() + 1000 * MINUTE).is_some(),
        "they do not expire"
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_the_previous_credentials_serve_until_they_expire() {
    let clock = TestClock::new();
    let t0 = clock.now();
    let down = || {
        Err(CredentialsError::Unavailable(
            "instance metadata unreachable".into(),
        ))
    };
    let source = ScriptedSource::new(
        &clock,
        vec![Ok(credentials("AKIDOLD", Some(t0 + 4 * MINUTE))), down()],
    );
    let (store, shutdown, task) = start(Arc::clone(&source), &clock);

    // 4 minutes of lifetime: refreshed at 2 minutes, which fails, then retried with backoff.
    tokio::time::sleep(2 * MINUTE + Duration::from_millis(500)).await;
    assert_eq!(source.fetches(), [Duration::ZERO, 2 * MINUTE]);
    let status = store.status(clock.now());
    assert!(status.available);
    assert_eq!(
        status.last_error.as_deref(),
        Some("no AWS credentials: instance metadata unreachable")
    );
    assert_eq!(
        store.next_refresh_at(),
        Some(t0 + 2 * MINUTE + Duration::from_secs(1))
    );

    tokio::time::sleep(Duration::from_secs(61)).await;
    let secs: Vec<u64> = source.fetches().iter().map(|d| d.as_secs()).collect();
    // 120, then +1, +2, +4, +8, +16, +30 ...
    assert_eq!(&secs[1..], [120, 121, 123, 127, 135, 151, 181]);
    assert_eq!(store.current(clock.now()).unwrap().access_key_id, "AKIDOLD");

    // Past their expiry they are no longer handed out.
    tokio::time::sleep(MINUTE).await;
    assert!(clock.now() > t0 + 4 * MINUTE);
    assert!(store.current(clock.now()).is_none());
    let status = store.status(clock.now());
    assert!(!status.available);
    assert_eq!(status.access_key_id_prefix, None);
    assert!(status.refresh_failures >= 8);

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn credentials_that_arrive_expired_count_as_a_failure() {
    let clock = TestClock::new();
    let t0 = clock.now();
    let source = ScriptedSource::new(
        &clock,
        vec![
            Ok(credentials("AKIDSTALE", Some(t0))),
            Ok(credentials("AKIDFRESH", None)),
        ],
    );
    let (store, shutdown, task) = start(Arc::clone(&source), &clock);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(store.current(clock.now()).is_none());
    assert_eq!(
        store.last_error().as_deref(),
        Some("the test provider returned credentials that have already expired")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.current(clock.now()).unwrap().access_key_id,
        "AKIDFRESH"
    );
    assert_eq!(store.last_error(), None);
    shutdown.cancel();
    task.await.unwrap();
}

/// Never answers: the refresher must time out instead of waiting forever.
struct HangingSource;

impl CredentialSource for HangingSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_fetch_times_out() {
    let clock = TestClock::new();
    let store = Arc::new(CredentialStore::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_refresher(
        Arc::new(HangingSource),
        Arc::clone(&store),
        clock.clone() as Arc<dyn Clock>,
        shutdown.clone(),
    ));
    tokio::time::sleep(FETCH_TIMEOUT + Duration::from_millis(500)).await;
    assert_eq!(
        store.last_error().as_deref(),
        Some("fetching AWS credentials took longer than 30 seconds")
    );
    shutdown.cancel();
    task.await.unwrap();
}
