//! Transient faults: the wait before the next try, and a bounded retry of one
//! Glance call that is safe to repeat (the prune's deletes and hides; an
//! upload retries whole tries, see `upload`).

use std::future::Future;
use std::time::Duration;

use crate::openstack::OpenStackError;

/// The wait before try `tried + 1`: `first` doubled for each try after the
/// first, then between half of it and all of it at random, so that uploads a
/// fault hit together do not come back together.
/// It never exceeds a day, whatever `upload_retry_backoff` says.
pub(crate) fn backoff(first: Duration, tried: u32) -> Duration {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let doubled = first
        .saturating_mul(1u32 << tried.saturating_sub(1).min(16))
        .min(DAY);
    doubled.mul_f64(rand::random_range(0.5..=1.0))
}

/// Runs `call` up to `attempts` times in all while it fails with a transient
/// fault (a 5xx, a refused or broken connection), waiting [`backoff`] from
/// `first` between tries. Any other outcome, or the last try's, is returned.
pub(crate) async fn while_transient<T, F, Fut>(
    attempts: u32,
    first: Duration,
    mut call: F,
) -> Result<T, OpenStackError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OpenStackError>>,
{
    let mut tried = 1;
    loop {
        match call().await {
            Err(err) if err.is_transient() && tried < attempts => {
                tracing::warn!(error = %err, attempt = tried, "transient fault; trying again");
                tokio::time::sleep(backoff(first, tried)).await;
                tried += 1;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{backoff, while_transient};
    use crate::openstack::OpenStackError;
    use std::time::Duration;

    fn fault(status: u16) -> OpenStackError {
        OpenStackError::Api {
            cloud: "c".into(),
            service: crate::openstack::Service::Glance,
            operation: "DELETE /v2/images/x".into(),
            status,
            message: "m".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_fault_is_tried_again_up_to_the_attempts_and_a_4xx_never() {
        let tries = std::cell::Cell::new(0);
        let failing = |status| {
            let tries = &tries;
            move || {
                tries.set(tries.get() + 1);
                async move { Err::<(), _>(fault(status)) }
            }
        };
        assert!(while_transient(3, Duration::from_secs(2), failing(500))
            .await
            .is_err());
        assert_eq!(tries.replace(0), 3);
        assert!(while_transient(3, Duration::from_secs(2), failing(409))
            .await
            .is_err());
        assert_eq!(tries.replace(0), 1);
        let second_works = || {
            tries.set(tries.get() + 1);
            let n = tries.get();
            async move {
                if n < 2 {
                    Err(fault(503))
                } else {
                    Ok(n)
                }
            }
        };
        assert_eq!(
            while_transient(3, Duration::from_secs(2), second_works)
                .await
                .unwrap(),
            2
        );
    }

    #[test]
    fn the_backoff_doubles_with_jitter_within_bounds() {
        let first = Duration::from_secs(2);
        for (tried, whole) in [(1, 2), (2, 4), (3, 8)] {
            for _ in 0..100 {
                let wait = backoff(first, tried);
                let whole = Duration::from_secs(whole);
                assert!(wait >= whole / 2 && wait <= whole, "{tried}: {wait:?}");
            }
        }
        assert!(backoff(first, u32::MAX) <= Duration::from_secs(24 * 3600));
        let century = Duration::from_secs(100 * 366 * 24 * 3600);
        assert!(backoff(century, 10) <= Duration::from_secs(24 * 3600));
    }
}
