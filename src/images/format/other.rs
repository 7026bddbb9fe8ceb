//! VDI (VirtualBox) and LUKS (an encrypted container, which Glance has no disk
//! format for).

use super::{le32, le64, Probe, UnsafeImage};

/// VDI: the magic at 0x40 (little-endian), the virtual size at 0x170.
const VDI_MAGIC: u32 = 0xbeda_107f;
const VDI_HEADER_LEN: usize = 512;

pub(super) fn probe_vdi(head: &[u8]) -> Probe {
    if head.len() < VDI_HEADER_LEN || le32(head, 0x40) != VDI_MAGIC {
        return None;
    }
    Some(Ok(le64(head, 0x170)))
}

pub(super) fn probe_luks(head: &[u8]) -> Probe {
    head.starts_with(b"LUKS\xba\xbe")
        .then_some(Err(UnsafeImage::Refused(
            "a LUKS-encrypted container: no disk format of Glance holds one",
        )))
}
