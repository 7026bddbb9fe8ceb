//! VHD (`vpc` to qemu) and VHDX.
//!
//! A dynamic VHD starts with a copy of its 512-byte big-endian footer:
//! `conectix` at 0, the current size at 48. A fixed VHD has its footer only at
//! the end: Glance (and this module) take it for raw, which it is, plus 512
//! bytes.
//!
//! A VHDX starts with `vhdxfile`; its virtual size is a metadata item found
//! through two tables, each read bounded:
//! 1. the region table at 192 KiB (`regi`, an entry count, 32-byte entries of
//!    GUID, offset, length, flags) gives the metadata region's offset;
//! 2. the metadata table there (`metadata`, an entry count at 10, 32-byte
//!    entries from 32 of GUID, offset from the region, length) gives the
//!    "virtual disk size" item's offset: a little-endian u64.

use std::io;

use super::{be64, le16, le32, le64, Image, Probe, UnsafeImage};

pub(super) fn probe_vhd(head: &[u8]) -> Probe {
    if !head.starts_with(b"conectix") {
        return None;
    }
    if head.len() < 512 {
        return Some(Err(UnsafeImage::malformed(
            "vhd",
            format!("its footer is cut short ({} bytes)", head.len()),
        )));
    }
    Some(Ok(be64(head, 48)))
}

const REGION_TABLE: u64 = 192 * 1024;
const TABLE_LEN: usize = 64 * 1024;
/// Both tables hold at most 2047 entries (the VHDX specification).
const MAX_ENTRIES: usize = 2047;
/// 8B7CA206-4790-4B9A-B8FE-575F050F886E, as stored (mixed-endian).
const METADATA_REGION: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];
/// 2FA54224-CD1B-4876-B211-5DBED83BF4B8, as stored.
const VIRTUAL_DISK_SIZE: [u8; 16] = [
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48, 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8,
];

pub(super) fn probe_vhdx(image: &Image<'_>, head: &[u8]) -> io::Result<Probe> {
    if !head.starts_with(b"vhdxfile") {
        return Ok(None);
    }
    Ok(Some(
        virtual_size(image)?.map_err(|reason| UnsafeImage::malformed("vhdx", reason)),
    ))
}

fn virtual_size(image: &Image<'_>) -> io::Result<Result<u64, &'static str>> {
    let regions = image.region(REGION_TABLE, TABLE_LEN)?;
    if !regions.starts_with(b"regi") {
        return Ok(Err("no region table at 192 KiB"));
    }
    let Some(entry) = find_entry(&regions, le32(&regions, 8) as usize, 16, &METADATA_REGION) else {
        return Ok(Err("no metadata region in the region table"));
    };
    let metadata_at = le64(entry, 16);
    let metadata = image.region(metadata_at, TABLE_LEN)?;
    if !metadata.starts_with(b"metadata") {
        return Ok(Err("no metadata table where the region table says"));
    }
    let Some(item) = find_entry(
        &metadata,
        le16(&metadata, 10) as usize,
        32,
        &VIRTUAL_DISK_SIZE,
    ) else {
        return Ok(Err("no virtual disk size in the metadata table"));
    };
    let at = metadata_at.checked_add(u64::from(le32(item, 16)));
    match at.map(|at| image.exact(at, 8)).transpose()?.flatten() {
        Some(size) => Ok(Ok(le64(&size, 0))),
        None => Ok(Err("the virtual disk size is past the end of the file")),
    }
}

/// The 32-byte entry whose GUID is `guid`, among the first `count` (at most
/// [`MAX_ENTRIES`], and only those inside `table`) from `first`.
fn find_entry<'t>(
    table: &'t [u8],
    count: usize,
    first: usize,
    guid: &[u8; 16],
) -> Option<&'t [u8]> {
    table
        .get(first..)?
        .chunks_exact(32)
        .take(count.min(MAX_ENTRIES))
        .find(|entry| entry.starts_with(guid))
}
