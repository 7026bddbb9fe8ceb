//! Unit tests of the session: the refresh schedule, single flight and the login
//! backoff, with an injected token issuer and paused time.

use super::*;
use crate::openstack::login_backoff::{backoff, BACKOFF_BASE};
use std::sync::atomic::AtomicU32;

#[test]
fn refresh_uses_the_margin_when_it_fits() {
    let hour = Duration::from_secs(3600);
    assert_eq!(
        refresh_delay(hour, Duration::from_secs(600)),
        Duration::from_secs(3000)
    );
}

#[test]
fn refresh_is_never_later_than_ninety_percent_of_the_lifetime() {
    let hour = Duration::from_secs(3600);
    assert_eq!(
        refresh_delay(hour, Duration::from_secs(10)),
        Duration::from_secs(3240)
    );
}

#[test]
fn short_tokens_refresh_once_per_lifetime_not_in_a_storm() {
    // A 10 min margin on a 60 s token would refresh constantly; 10 % is used.
    let minute = Duration::from_secs(60);
    assert_eq!(
        refresh_delay(minute, Duration::from_secs(600)),
        Duration::from_secs(54)
    );
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter_within_half() {
    let (base, cap) = (BACKOFF_BASE, Duration::from_secs(30));
    assert_eq!(backoff(1, base, cap, 0.0), Duration::from_millis(500));
    assert_eq!(backoff(1, base, cap, 1.0), Duration::from_secs(1));
    assert_eq!(backoff(3, base, cap, 1.0), Duration::from_secs(4));
    assert_eq!(backoff(20, base, cap, 1.0), cap);
    assert_eq!(backoff(20, base, cap, 0.0), cap / 2);
}

fn test_cloud() -> CloudConfig {
    let yaml = r#"
clouds:
  t:
    auth:
      auth_url: http://127.0.0.1:1/v3
      username: u
      password: p
      project_name: p
      user_domain_name: Default
      project_domain_name: Default
    image_endpoint_override: http://127.0.0.1:2
"#;
    crate::clouds::CloudsFile::parse(yaml, None, None)
        .unwrap()
        .clouds
        .remove(0)
}

fn token(lifetime: Duration) -> Token {
    Token {
        value: crate::secret::Secret::new("tok"),
        expires_at: Utc::now() + chrono::Duration::from_std(lifetime).unwrap(),
        valid_until: Instant::now() + lifetime,
        lifetime,
        scope: keystone::TokenScope::Project("p".into()),
        catalog: vec![],
    }
}

/// A session whose tokens live `lifetime`; the first `fail_first` requests fail.
fn counting_session(
    lifetime: Duration,
    margin: Duration,
    fail_after: u32,
    fail_count: u32,
) -> (Arc<Session>, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let issuer: TokenIssuer = Arc::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n >= fail_after && n < fail_after + fail_count {
                Err(OpenStackError::Connection {
                    cloud: "t".into(),
                    service: Service::Keystone,
                    url: "http://k".into(),
                    cause: "refused".into(),
                })
            } else {
                Ok(token(lifetime))
            }
        })
    });
    let cloud = test_cloud();
    let clients = HttpClients::for_cloud(&cloud).unwrap();
    (Session::with_issuer(cloud, clients, margin, issuer), calls)
}

#[tokio::test(start_paused = true)]
async fn one_token_per_lifetime_over_three_lifetimes() {
    let life = Duration::from_secs(60);
    let (session, calls) = counting_session(life, Duration::from_secs(600), u32::MAX, 0);
    session.start_refresher();
    // Sample like a busy hook would: the session must always have a valid token.
    for _ in 0..180 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(session.valid().is_some(), "no valid token at some point");
    }
    // Requests at 0, 54, 108, 162 s: one per 0.9 lifetime.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn failed_refresh_retries_with_backoff_while_the_old_token_serves() {
    let life = Duration::from_secs(100);
    // The first refresh (call #1, at 90 s) and the next two retries fail.
    let (session, calls) = counting_session(life, Duration::from_secs(10), 1, 3);
    session.start_refresher();
    tokio::time::sleep(Duration::from_millis(90_200)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "first refresh at 90 s");
    let first_generation = session.valid().expect("old token still in use").generation;
    assert_eq!(first_generation, 1);
    assert!(session.status().last_error.is_some());
    // Retries after at most 1 s, 2 s and 4 s (jittered down to half): by 97 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let now = session.valid().expect("a new token");
    assert_eq!(now.generation, 2);
    assert!(session.status().last_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn concurrent_renewals_of_the_same_token_share_one_request() {
    let (session, calls) = counting_session(
        Duration::from_secs(3600),
        Duration::from_secs(600),
        u32::MAX,
        0,
    );
    let first = session.authenticated().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = session.clone();
        let seen = first.generation;
        tasks.push(tokio::spawn(async move {
            s.renew(Some(seen)).await.unwrap().generation
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 2);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A session whose every token request takes `takes`, then fails with `error`.
fn failing_session(
    takes: Duration,
    error: fn() -> OpenStackError,
) -> (Arc<Session>, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let issuer: TokenIssuer = Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(takes).await;
            Err(error())
        })
    });
    let cloud = test_cloud();
    let clients = HttpClients::for_cloud(&cloud).unwrap();
    let margin = Duration::from_secs(600);
    (Session::with_issuer(cloud, clients, margin, issuer), calls)
}

fn rejected() -> OpenStackError {
    OpenStackError::Unauthorized {
        cloud: "t".into(),
        status: 401,
        reason: super::super::Refusal::Rejected {
            message: "The request you have made requires authentication.".into(),
        },
    }
}

#[tokio::test(start_paused = true)]
async fn a_rejected_password_is_tried_once_by_many_and_then_backs_off() {
    let (session, calls) = failing_session(Duration::from_millis(300), rejected);
    session.start_refresher();
    let burst = (0..50).map(|_| session.authenticated());
    for result in futures_util::future::join_all(burst).await {
        assert!(matches!(result, Err(OpenStackError::Unauthorized { .. })));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "50 requests, one attempt");
    let mut answered_at_once = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        let result = session.authenticated().await;
        assert!(matches!(result, Err(OpenStackError::Unauthorized { .. })));
        if sent.elapsed().is_zero() {
            answered_at_once += 1;
        }
    }
    let attempts = calls.load(Ordering::SeqCst);
    assert!(attempts <= 3, "{attempts} attempts in 10 s");
    // Only a request that arrives during an attempt waits for it (0.3 s).
    assert!(answered_at_once >= 100 - 3 * 3, "{answered_at_once}");
}

#[tokio::test(start_paused = true)]
async fn with_keystone_hung_waiting_requests_share_one_attempt() {
    let hung = || OpenStackError::Connection {
        cloud: "t".into(),
        service: Service::Keystone,
        url: "http://k".into(),
        cause: "operation timed out".into(),
    };
    let (session, calls) = failing_session(Duration::from_secs(60), hung);
    let waiting = (0..10).map(|_| session.authenticated());
    for result in futures_util::future::join_all(waiting).await {
        assert!(matches!(result, Err(OpenStackError::NotReady { .. })));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // In the backoff that follows, a request answers at once with that error.
    let sent = Instant::now();
    let result = session.authenticated().await;
    assert!(sent.elapsed().is_zero());
    match result {
        Err(OpenStackError::NotReady { reason, .. }) => {
            assert!(reason.contains("timed out"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn keystone_down_at_start_recovers_without_a_restart() {
    let life = Duration::from_secs(3600);
    let (session, calls) = counting_session(life, Duration::from_secs(600), 0, 4);
    session.start_refresher();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!session.status().authenticated);
    assert!(session.status().last_error.unwrap().contains("refused"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(session.status().authenticated);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_new_margin_reschedules_the_refresh_and_keeps_the_token() {
    let life = Duration::from_secs(1000);
    let (session, calls) = counting_session(life, Duration::from_secs(100), u32::MAX, 0);
    session.start_refresher();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let token = session.status().token_expires_at;

    // Refresh at 900 s by the old margin, at 500 s by the new one.
    session.set_margin(Duration::from_secs(500));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the token is kept");
    assert_eq!(session.status().token_expires_at, token);
    tokio::time::sleep(Duration::from_secs(475)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "refreshed by the new margin"
    );
}
