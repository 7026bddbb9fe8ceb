use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use super::*;

const MIB: usize = 1 << 20;

fn qemu_img(dir: &Path, args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("qemu-img (Debian's qemu-utils) must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw disk of `size` bytes with data in its second MiB only (the rest is
/// holes), and the same converted to `format`.
fn disk(dir: &Path, format: &str, size: usize) -> (Vec<u8>, PathBuf) {
    let mut bytes = vec![0u8; size];
    for (i, b) in bytes[MIB..2 * MIB].iter_mut().enumerate() {
        *b = (i % 253) as u8 + 1;
    }
    std::fs::write(dir.join("disk.raw"), &bytes).unwrap();
    let name = format!("disk.{format}");
    qemu_img(
        dir,
        &[
            "convert", "-q", "-f", "raw", "-O", format, "disk.raw", &name,
        ],
    );
    (bytes, dir.join(name))
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(list) => list.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn a_qcow2_becomes_a_sparse_raw_file_that_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for format in ["qcow2", "vmdk", "vpc", "vhdx"] {
        let (raw, image) = disk(work.path(), format, 64 * MIB);
        let source = File::open(&image).unwrap();
        let from: DiskFormat = if format == "vpc" { "vhd" } else { format }
            .parse()
            .unwrap();
        let virtual_size = {
            let found = crate::images::format::inspect(&crate::images::format::Image::new(
                &source,
                source.metadata().unwrap().len(),
            ))
            .unwrap()
            .unwrap();
            found.virtual_size
        };
        let staged = to_raw(state.path(), &source, from, virtual_size)
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(staged.size, virtual_size, "{format}");
        // The staging directory is already empty: the file lives while open.
        assert!(!staged.path.exists(), "{format}");
        assert_eq!(entries(&staging_dir(state.path())), Vec::<PathBuf>::new());
        let meta = staged.file.metadata().unwrap();
        assert!(
            meta.blocks() * 512 < 8 * MIB as u64,
            "{format}: {} bytes allocated, not sparse",
            meta.blocks() * 512
        );
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut &staged.file, &mut data).unwrap();
        // vpc rounds the size up to its geometry: the rest is zeros.
        assert_eq!(&data[..raw.len()], &raw[..], "{format}");
        assert!(data[raw.len()..].iter().all(|&b| b == 0), "{format}");
    }
}

#[tokio::test]
async fn not_enough_space_is_refused_before_qemu_img_runs() {
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (_, image) = disk(work.path(), "qcow2", 4 * MIB);
    let source = File::open(&image).unwrap();
    let err = to_raw(state.path(), &source, DiskFormat::Qcow2, u64::MAX / 2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConvertError::InsufficientSpace { needed, available, .. } if needed == u64::MAX / 2 && available < needed),
        "{err}"
    );
    assert!(err.to_string().contains("not enough space"), "{err}");
    assert_eq!(entries(&staging_dir(state.path())), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn a_failed_conversion_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // A qcow2 of a cluster size qemu refuses (2^40 bytes).
    let (_, image) = disk(work.path(), "qcow2", 4 * MIB);
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[20..24].copy_from_slice(&40u32.to_be_bytes());
    std::fs::write(&image, &bytes).unwrap();
    let source = File::open(&image).unwrap();
    let err = to_raw(state.path(), &source, DiskFormat::Qcow2, 4 * MIB as u64)
        .await
        .unwrap_err();
    assert!(matches!(err, ConvertError::Failed { .. }), "{err}");
    assert!(
        err.to_string().contains("qemu-img could not convert"),
        "{err}"
    );
    assert_eq!(entries(&staging_dir(state.path())), Vec::<PathBuf>::new());
    // A format qemu-img has no driver for.
    let err = to_raw(state.path(), &source, DiskFormat::Ami, 4 * MIB as u64)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConvertError::Unsupported(DiskFormat::Ami)),
        "{err}"
    );
}

#[tokio::test]
async fn a_cancelled_conversion_leaves_nothing_behind() {
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let path = work.path().join("big.qcow2");
    // Random data: slow enough to convert to be cut off.
    let mut data = vec![0u8; 96 * MIB];
    rand::fill(&mut data[..]);
    std::fs::write(work.path().join("big.raw"), &data).unwrap();
    qemu_img(
        work.path(),
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "big.raw",
            "big.qcow2",
        ],
    );
    let source = File::open(&path).unwrap();
    let cut = tokio::time::timeout(
        Duration::from_millis(30),
        to_raw(state.path(), &source, DiskFormat::Qcow2, data.len() as u64),
    )
    .await;
    assert!(
        cut.is_err(),
        "the conversion finished before it was cut off"
    );
    // qemu-img is killed and the guard removed its output.
    assert_eq!(entries(&staging_dir(state.path())), Vec::<PathBuf>::new());
}

#[test]
fn the_staging_directory_is_emptied_at_start() {
    let state = tempfile::tempdir().unwrap();
    assert_eq!(clean_staging(state.path()).unwrap(), 0);
    let dir = staging_dir(state.path());
    assert_eq!(dir.metadata().unwrap().mode() & 0o777, 0o700);
    std::fs::write(dir.join("left.raw"), b"x").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/f"), b"x").unwrap();
    std::os::unix::fs::symlink(state.path(), dir.join("link")).unwrap();
    assert_eq!(clean_staging(state.path()).unwrap(), 3);
    assert_eq!(entries(&dir), Vec::<PathBuf>::new());
    // What a symlink pointed to is untouched.
    assert!(state.path().join("staging").is_dir());
}
