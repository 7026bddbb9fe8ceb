//! Property tests: whatever the bytes, the detector gives a verdict, never a
//! panic, and reads no more than it may. Inputs are random bytes, random bytes
//! behind each format's magic, and real files made by `qemu-img` with random
//! bytes and extreme integers written over their headers and metadata.

use std::cell::Cell;
use std::io;
use std::process::Command;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Bytes that count what is read, to check the reads stay bounded.
struct Counted<'a> {
    bytes: &'a [u8],
    read: Cell<u64>,
}

impl ReadAt for Counted<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = ReadAt::read_at(&self.bytes, buf, offset)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Inspects and judges `bytes` as every declared format; checks that the
/// reads stayed within the few regions a verdict needs.
fn verdict_of(bytes: &[u8], claimed_len: u64) {
    let counted = Counted {
        bytes,
        read: Cell::new(0),
    };
    let verdict = inspect(&Image::new(&counted, claimed_len)).unwrap();
    // The head, the two VHDX tables and item, a vmdk descriptor, its footer.
    let bound = (HEAD_LEN + 2 * 64 * 1024 + 8 + 2 * MAX_READ + 1536) as u64;
    assert!(
        counted.read.get() <= bound,
        "read {} bytes",
        counted.read.get()
    );
    if let Ok(found) = verdict {
        for declared in DiskFormat::ALL {
            let _ = judge(&found, Some(*declared), ContainerFormat::Bare);
        }
    }
}

/// Real files of each format (made once), to mutate.
fn samples() -> &'static Vec<Vec<u8>> {
    static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (format, options) in [
            ("qcow2", ""),
            ("vmdk", ""),
            ("vmdk", "subformat=streamOptimized"),
            ("vpc", ""),
            ("vhdx", ""),
            ("vdi", ""),
        ] {
            let path = dir.path().join(format!("f{}", files.len()));
            let mut cmd = Command::new("qemu-img");
            cmd.args(["create", "-q", "-f", format]);
            if !options.is_empty() {
                cmd.args(["-o", options]);
            }
            assert!(cmd.arg(&path).arg("4M").status().unwrap().success());
            files.push(std::fs::read(&path).unwrap());
        }
        files.push(super::tests::iso(20));
        files
    })
}

/// Where the metadata is: the headers, VHDX's tables (192 KiB; its metadata
/// region, at 1 MiB or 2 MiB as qemu lays it out) and the last sectors.
fn hot_offset() -> impl Strategy<Value = (usize, bool)> {
    prop_oneof![
        (0usize..1024).prop_map(|o| (o, false)),
        (32 * 1024usize..34 * 1024).prop_map(|o| (o, false)),
        (0x30000usize..0x30000 + 1024).prop_map(|o| (o, false)),
        (0x100000usize..0x100000 + 1024).prop_map(|o| (o, false)),
        (0x200000usize..0x200000 + 1024).prop_map(|o| (o, false)),
        (0usize..1536).prop_map(|o| (o, true)),
    ]
}

fn magic() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        &b"QFI\xfb"[..],
        b"QED\0",
        b"conectix",
        b"vhdxfile",
        b"KDMV",
        b"LUKS\xba\xbe",
        b"# Disk DescriptorFile\ncreateType=\"monolithicSparse\"\nRW 8 SPARSE \"x\"\n",
    ])
    .prop_map(<[u8]>::to_vec)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_get_a_verdict(bytes in prop::collection::vec(any::<u8>(), 0..40_000)) {
        verdict_of(&bytes, bytes.len() as u64);
    }

    #[test]
    fn random_bytes_behind_a_magic_get_a_verdict(
        magic in magic(),
        rest in prop::collection::vec(any::<u8>(), 0..2048),
        extra_len in prop_oneof![Just(0u64), any::<u64>()],
    ) {
        let mut bytes = magic;
        bytes.extend(rest);
        // The length at open time may be more than what is there (a shrunk file).
        verdict_of(&bytes, (bytes.len() as u64).saturating_add(extra_len));
    }

    #[test]
    fn real_headers_overwritten_get_a_verdict(
        sample in 0usize..7,
        edits in prop::collection::vec(
            (hot_offset(), prop_oneof![
                any::<u8>().prop_map(|b| vec![b]),
                Just(u64::MAX.to_le_bytes().to_vec()),
                Just(u32::MAX.to_be_bytes().to_vec()),
                any::<u64>().prop_map(|v| v.to_le_bytes().to_vec()),
                any::<u32>().prop_map(|v| v.to_le_bytes().to_vec()),
            ]),
            1..8,
        ),
    ) {
        let mut bytes = samples()[sample].clone();
        let len = bytes.len();
        for ((offset, from_end), value) in edits {
            let at = if from_end { len.saturating_sub(offset + 1) } else { offset };
            for (i, b) in value.into_iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
        verdict_of(&bytes, len as u64);
    }
}
