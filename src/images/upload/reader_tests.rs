use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use futures_util::StreamExt;

use super::*;

fn open(path: &std::path::Path) -> SourceFile {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .unwrap();
    SourceFile::from_open(file, path).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn sha(algo: &'static aws_lc_rs::digest::Algorithm, data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(algo, data).as_ref())
}

/// Every block of `body`, and whether one was an error.
async fn drain(body: SinkBody) -> (Vec<u8>, bool) {
    let mut stream = Box::pin(body.into_stream());
    let (mut bytes, mut failed) = (Vec::new(), false);
    while let Some(block) = stream.next().await {
        match block {
            Ok(b) => bytes.extend_from_slice(&b),
            Err(_) => failed = true,
        }
    }
    (bytes, failed)
}

#[tokio::test]
async fn every_sink_gets_every_byte_and_the_file_is_hashed_once_with_each_algo() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    let data = pattern(READ_BLOCK * 2 + 123);
    std::fs::write(&p, &data).unwrap();
    let (flow_a, flow_b) = (Flow::default(), Flow::default());
    let (sink_a, body_a) = sink("a", &flow_a);
    let (sink_b, body_b) = sink("b", &flow_b);
    let read = Arc::new(AtomicU64::new(0));
    let digests = spawn_reader(
        open(&p),
        vec![HashAlgo::Sha512, HashAlgo::Sha256, HashAlgo::Sha512],
        vec![sink_a, sink_b],
        read.clone(),
    );
    let ((a, a_failed), (b, b_failed)) = tokio::join!(drain(body_a), drain(body_b));
    assert!(!a_failed && !b_failed);
    assert_eq!(a, data);
    assert_eq!(b, data);
    let d = digests.await.unwrap().unwrap();
    assert_eq!(d.size, data.len() as u64);
    assert_eq!(d.md5, hex::encode(Md5::digest(&data)));
    assert_eq!(d.os_hashes.len(), 2, "one value per distinct algo");
    assert_eq!(
        d.os_hash(HashAlgo::Sha512).unwrap(),
        sha(&aws_lc_rs::digest::SHA512, &data)
    );
    assert_eq!(
        d.os_hash(HashAlgo::Sha256).unwrap(),
        sha(&aws_lc_rs::digest::SHA256, &data)
    );
    assert_eq!(d.os_hash(HashAlgo::Sha384), None);
    for flow in [&flow_a, &flow_b] {
        assert_eq!(flow.taken.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(flow.offered.load(Ordering::Relaxed), data.len() as u64);
    }
    assert_eq!(read.load(Ordering::Relaxed), data.len() as u64);
    let whole = hash_source(&mut open(&p), &[HashAlgo::Sha512, HashAlgo::Sha256]).unwrap();
    assert_eq!(whole, d);
    assert_eq!(
        hash_file(&File::open(&p).unwrap(), HashAlgo::Sha256).unwrap(),
        d.os_hash(HashAlgo::Sha256).unwrap()
    );
}

#[tokio::test]
async fn a_sink_that_gives_up_is_dropped_and_the_others_get_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    let data = pattern(READ_BLOCK * (READ_AHEAD + 6));
    std::fs::write(&p, &data).unwrap();
    let (sink_a, body_a) = sink("a", &Flow::default());
    let (sink_b, body_b) = sink("b", &Flow::default());
    let (sink_c, body_c) = sink("c", &Flow::default());
    let digests = spawn_reader(
        open(&p),
        vec![HashAlgo::Sha256],
        vec![sink_a, sink_b, sink_c],
        Arc::new(AtomicU64::new(0)),
    );
    // b's upload holds its body but never reads it (a stalled server), then
    // gives up; c's receiver is simply dropped.
    let give_up = body_b.canceller();
    drop(body_c);
    let reader_a = tokio::spawn(drain(body_a));
    tokio::time::sleep(Duration::from_millis(100)).await;
    give_up.cancel();
    let (a, failed) = tokio::time::timeout(Duration::from_secs(10), reader_a)
        .await
        .unwrap()
        .unwrap();
    assert!(!failed);
    assert_eq!(a, data);
    let d = digests.await.unwrap().unwrap();
    assert_eq!(
        d.os_hash(HashAlgo::Sha256).unwrap(),
        sha(&aws_lc_rs::digest::SHA256, &data)
    );
    drop(body_b);
}

#[tokio::test]
async fn when_every_sink_is_gone_the_reader_stops() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    std::fs::write(&p, vec![7u8; READ_BLOCK * (READ_AHEAD + 4)]).unwrap();
    let (sink_a, body_a) = sink("a", &Flow::default());
    let digests = spawn_reader(
        open(&p),
        vec![HashAlgo::Sha256],
        vec![sink_a],
        Arc::new(AtomicU64::new(0)),
    );
    // The body is held but never read, as by a client whose server stalled.
    tokio::time::sleep(Duration::from_millis(50)).await;
    body_a.canceller().cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), digests).await;
    assert!(matches!(result, Ok(Ok(Err(SourceError::Abandoned)))));
    drop(body_a);
}

#[tokio::test]
async fn a_file_that_grows_fails_every_body() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    std::fs::write(&p, vec![1u8; 1000]).unwrap();
    let source = open(&p);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"))
        .unwrap();
    let (sink_a, body_a) = sink("a", &Flow::default());
    let (sink_b, body_b) = sink("b", &Flow::default());
    let digests = spawn_reader(
        source,
        vec![HashAlgo::Sha256],
        vec![sink_a, sink_b],
        Arc::new(AtomicU64::new(0)),
    );
    let ((_, a_failed), (_, b_failed)) = tokio::join!(drain(body_a), drain(body_b));
    assert!(a_failed && b_failed);
    let message = digests.await.unwrap().unwrap_err().to_string();
    assert!(message.contains("grew"), "{message}");
}

#[tokio::test]
async fn a_file_overwritten_in_place_fails_the_body_before_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    std::fs::write(&p, vec![1u8; READ_BLOCK * 3]).unwrap();
    // An old modification time, so the write below moves it whatever the
    // clock's granularity.
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let source = open(&p);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(&[2u8; 16], READ_BLOCK as u64 * 2)
        .unwrap();
    let (sink_a, body_a) = sink("a", &Flow::default());
    let digests = spawn_reader(
        source,
        vec![HashAlgo::Sha256],
        vec![sink_a],
        Arc::new(AtomicU64::new(0)),
    );
    let (bytes, failed) = drain(body_a).await;
    assert!(failed);
    assert!(
        bytes.len() < READ_BLOCK * 3,
        "never a complete body: {}",
        bytes.len()
    );
    let message = digests.await.unwrap().unwrap_err().to_string();
    assert!(
        message.contains("modified") && message.contains("modification time"),
        "{message}"
    );
    let err = hash_source(&mut open(&p), &[HashAlgo::Sha256]);
    assert!(
        err.is_ok(),
        "a file left alone since it was opened hashes fine"
    );
}
