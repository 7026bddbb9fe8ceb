//! qcow2 (and QED, which Glance refuses): a big-endian header at offset 0.
//!
//! | offset | field |
//! | --- | --- |
//! | 0 | magic `QFI\xfb` |
//! | 4 | version (u32) |
//! | 8 | backing file offset (u64; nonzero: a backing file) |
//! | 24 | virtual size in bytes (u64) |
//! | 72 | incompatible features (u64, version 3): bit 2 is an external data file |

use super::{be32, be64, Probe, UnsafeImage};

const MAGIC: &[u8] = b"QFI\xfb";
/// Version 3's header is 104 bytes; version 2's 72.
const HEADER_LEN: usize = 104;
const INCOMPATIBLE_FEATURES: usize = 72;
const DATA_FILE_BIT: u64 = 1 << 2;
/// The incompatible features Glance allows: dirty, corrupt, data file (refused
/// on its own) and compression type. Extended L2 (bit 4) and any newer one
/// are refused, as Glance refuses them.
const KNOWN_FEATURES: u64 = 0b1111;

pub(super) fn probe_qcow2(head: &[u8]) -> Probe {
    if !head.starts_with(MAGIC) {
        return None;
    }
    if head.len() < HEADER_LEN {
        return Some(Err(UnsafeImage::malformed(
            "qcow2",
            format!("its header is cut short ({} bytes)", head.len()),
        )));
    }
    Some(check(head).map(|()| be64(head, 24)))
}

fn check(head: &[u8]) -> Result<(), UnsafeImage> {
    let version = be32(head, 4);
    if version != 2 && version != 3 {
        return Err(UnsafeImage::Qcow2Version(version));
    }
    if be64(head, 8) != 0 {
        return Err(UnsafeImage::BackingFile);
    }
    if version == 3 {
        let features = be64(head, INCOMPATIBLE_FEATURES);
        if features & DATA_FILE_BIT != 0 {
            return Err(UnsafeImage::DataFile);
        }
        if features & !KNOWN_FEATURES != 0 {
            return Err(UnsafeImage::Qcow2Features(features & !KNOWN_FEATURES));
        }
    }
    Ok(())
}

pub(super) fn probe_qed(head: &[u8]) -> Probe {
    head.starts_with(b"QED\0")
        .then_some(Err(UnsafeImage::Refused(
            "a QED image, a format Glance refuses",
        )))
}
