//! The test plays systemd's part: a `NOTIFY_SOCKET` datagram socket receives
//! `READY=1`, the `STATUS=` lines, periodic `WATCHDOG=1` (with `WATCHDOG_USEC`
//! set) and `STOPPING=1` on SIGTERM, from a daemon running as its own process.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::helpers::{clouds_document, Bed};
use super::served::serve;

/// Every datagram received, with when it came.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(Instant, String)>>>);

impl Received {
    fn listen(socket: UnixDatagram) -> Received {
        let received = Received::default();
        let sink = received.clone();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Ends when the test drops the sink's last other owner.
            while Arc::strong_count(&sink.0) > 1 {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    sink.0.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        received
    }

    fn all(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    /// The lines received so far, in order.
    fn lines(&self) -> Vec<String> {
        self.all()
            .iter()
            .flat_map(|(_, text)| text.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.lines();
            if done(&lines) {
                return;
            }
            assert!(Instant::now() < deadline, "no {what} in {lines:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_notify_socket_gets_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let received = Received::listen(UnixDatagram::bind(&path).unwrap());
    let clouds = clouds_document(&[("charm", Bed::get().cloud_entry("charm"))]);
    let notify_socket = path.to_str().unwrap();
    // A watchdog of 400 ms: a ping at least every 200 ms.
    let env = [
        ("NOTIFY_SOCKET", notify_socket),
        ("WATCHDOG_USEC", "400000"),
    ];
    let mut daemon = serve(&clouds, "", &env).await;

    received
        .wait_for("READY=1", Duration::from_secs(10), |l| {
            l.iter().any(|l| l == "READY=1")
        })
        .await;
    let ready_datagram = received
        .all()
        .into_iter()
        .find(|(_, d)| d.lines().any(|l| l == "READY=1"))
        .unwrap()
        .1;
    assert!(
        ready_datagram.contains("STATUS="),
        "READY=1 without a status: {ready_datagram:?}"
    );
    received
        .wait_for(
            "a STATUS= line with the cloud authenticated",
            Duration::from_secs(20),
            |l| {
                l.iter()
                    .any(|l| l == "STATUS=1/1 clouds authenticated, 0 uploads running, 0 queued")
            },
        )
        .await;

    // Pings keep coming while the daemon is healthy.
    let before = received
        .lines()
        .iter()
        .filter(|l| *l == "WATCHDOG=1")
        .count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = received
        .lines()
        .iter()
        .filter(|l| *l == "WATCHDOG=1")
        .count();
    // About 7 (one per 200 ms); a loaded machine may delay some.
    assert!(after - before >= 3, "{} pings in 1.5 s", after - before);
    // Unchanged status lines are not repeated.
    let statuses = received
        .lines()
        .iter()
        .filter(|l| l.starts_with("STATUS="))
        .count();
    assert!(statuses <= 4, "{:?}", received.lines());

    daemon.signal(libc::SIGTERM);
    received
        .wait_for("STOPPING=1", Duration::from_secs(10), |l| {
            l.iter().any(|l| l == "STOPPING=1")
        })
        .await;
    let exit = daemon.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{}", daemon.log());
    let stopping = received
        .all()
        .into_iter()
        .find(|(_, d)| d.contains("STOPPING=1"))
        .unwrap()
        .1;
    assert!(stopping.contains("STATUS=stopping: "), "{stopping:?}");
    drop(received);
}
