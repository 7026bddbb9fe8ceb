//! ISO 9660 / UDF, and the MBR (or GPT protective MBR) of a raw disk.
//!
//! An ISO's first volume descriptor is sector 16 (of 2048 bytes): its type at
//! 0, `CD001` (or UDF's `NSR02`/`NSR03`) at 1; a primary one (type 1) gives the
//! block count (LE u32 at 80) and block size (LE u16 at 128).
//!
//! An MBR ends its first sector with `55 AA`, after four 16-byte partition
//! entries from 446; a FAT boot sector looks the same and is not one. Glance
//! detects it as `gpt` and refuses one whose entries are malformed, so a file
//! with such an MBR is refused here too; a good one is a raw disk.

use super::{le16, le32, Image, Probe, UnsafeImage};

const DESCRIPTOR: usize = 32 * 1024;
const DESCRIPTOR_LEN: usize = 2048;

pub(super) fn probe_iso(image: &Image<'_>, head: &[u8]) -> Probe {
    let pvd = head.get(DESCRIPTOR..DESCRIPTOR + DESCRIPTOR_LEN)?;
    if !matches!(&pvd[1..6], b"CD001" | b"NSR02" | b"NSR03") {
        return None;
    }
    let size = if pvd[0] == 1 {
        u64::from(le32(pvd, 80)) * u64::from(le16(pvd, 128))
    } else {
        0
    };
    Some(Ok(if size == 0 { image.len } else { size }))
}

const PARTITIONS: usize = 446;
const GPT_PROTECTIVE: u8 = 0xee;

pub(super) fn probe_mbr(image: &Image<'_>, head: &[u8]) -> Probe {
    let mbr = head.get(..512)?;
    let is_fat = mbr[0x10] == 2 && mbr[0x15] == 0xf8;
    if le16(mbr, 510) != 0xaa55 || is_fat {
        return None;
    }
    Some(
        check_partitions(mbr)
            .map(|()| image.len)
            .map_err(UnsafeImage::Mbr),
    )
}

fn check_partitions(mbr: &[u8]) -> Result<(), String> {
    let mut used = Vec::new();
    let mut gpt = false;
    for (i, entry) in mbr[PARTITIONS..PARTITIONS + 64]
        .chunks_exact(16)
        .enumerate()
    {
        if entry[0] != 0 && entry[0] != 0x80 {
            return Err(format!("partition entry {i} has an invalid boot flag"));
        }
        if entry[4] != 0 {
            used.push(i);
        }
        if entry[4] == GPT_PROTECTIVE {
            gpt = true;
            if entry[1..4] != [0, 2, 0] {
                return Err("the GPT protective entry has an invalid start CHS".into());
            }
            if le32(entry, 8) != 1 {
                return Err("the GPT protective entry does not start at LBA 1".into());
            }
        }
    }
    if gpt && used != [0] {
        return Err("a GPT disk's MBR defines other partitions".into());
    }
    if used.is_empty() {
        return Err("it defines no partition".into());
    }
    Ok(())
}
