//! VMDK: only the single-file kinds, `monolithicSparse` and `streamOptimized`,
//! are allowed; every other kind keeps its data in other files.
//!
//! A sparse extent starts with a little-endian header (`KDMV`, version at 4,
//! capacity in sectors at 12, descriptor sector at 28 and sector count at 36,
//! grain directory offset at 56), then the descriptor: text, at sector 1.
//! A file of text alone is a descriptor file (its extents are other files).
//! The descriptor is parsed line by line as Glance does; a line it does not
//! know refuses the file.

use std::io;

use super::{le32, le64, Image, Probe, UnsafeImage};

const SECTOR: u64 = 512;
/// qemu's bound on a descriptor (and Glance's).
const DESCRIPTOR_MAX: usize = (1 << 20) - 1;
/// A grain directory "at the end": the footer (3 sectors before the end) holds
/// the real header.
const GD_AT_END: u64 = u64::MAX;
const SPARSE_HEADER_LEN: usize = 64;
/// The two single-file kinds, lowercased.
const MONOLITHIC: [&str; 2] = ["monolithicsparse", "streamoptimized"];

pub(super) fn probe(image: &Image<'_>, head: &[u8]) -> io::Result<Probe> {
    let first = &head[..head.len().min(SECTOR as usize)];
    if first.starts_with(b"KDMV") {
        return Ok(Some(sparse(image, head)?));
    }
    if first.is_empty() || !first.iter().all(|&b| is_text(b)) {
        return Ok(None);
    }
    // Text: a descriptor file, if it says what kind it is.
    let text = descriptor_text(&image.region(0, DESCRIPTOR_MAX)?);
    Ok(text
        .as_deref()
        .and_then(create_type)
        .map(|kind| Err(UnsafeImage::VmdkDescriptorFile(kind))))
}

fn sparse(image: &Image<'_>, head: &[u8]) -> io::Result<Result<u64, UnsafeImage>> {
    let malformed = |reason: &str| Ok(Err(UnsafeImage::malformed("vmdk", reason)));
    if head.len() < SPARSE_HEADER_LEN {
        return malformed("its header is cut short");
    }
    if !(1..=3).contains(&le32(head, 4)) {
        return malformed("its version is not 1, 2 or 3");
    }
    if le64(head, 28) != 1 {
        return malformed("its descriptor is not at sector 1");
    }
    let descriptor_len = le64(head, 36)
        .saturating_mul(SECTOR)
        .min(DESCRIPTOR_MAX as u64) as usize;
    let Some(text) = descriptor_text(&image.region(SECTOR, descriptor_len)?) else {
        return Ok(Err(UnsafeImage::VmdkDescriptor("it is not ASCII text")));
    };
    if let Err(refused) = check_descriptor(&text) {
        return Ok(Err(refused));
    }
    if le64(head, 56) == GD_AT_END {
        if let Err(reason) = check_footer(image, head)? {
            return Ok(Err(UnsafeImage::VmdkFooter(reason)));
        }
    }
    Ok(Ok(le64(head, 12).saturating_mul(SECTOR)))
}

/// Printable ASCII or white space, as Glance tells a descriptor file.
fn is_text(b: u8) -> bool {
    b.is_ascii_graphic() || b == b' ' || (b'\t'..=b'\r').contains(&b)
}

/// The descriptor up to its first NUL, lowercased; `None` if not ASCII.
fn descriptor_text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = &bytes[..end];
    text.is_ascii()
        .then(|| String::from_utf8_lossy(text).to_ascii_lowercase())
}

/// The `createType="..."` value, when there is one of a sane length.
fn create_type(text: &str) -> Option<String> {
    const KEY: &str = "createtype=\"";
    let start = text.find(KEY)? + KEY.len();
    let len = text[start..].find('"')?;
    (len < 64).then(|| text[start..start + len].to_string())
}

/// Glance's rules: a single-file kind; each line a comment, a `ddb` entry, a
/// `key=value` header or an extent (`rw`, `rdonly`, `noaccess`) with no `/`
/// in it; at least one extent.
fn check_descriptor(text: &str) -> Result<(), UnsafeImage> {
    let Some(kind) = create_type(text) else {
        return Err(UnsafeImage::VmdkDescriptor("it has no createType"));
    };
    if !MONOLITHIC.contains(&kind.as_str()) {
        return Err(UnsafeImage::VmdkNotMonolithic(kind));
    }
    let mut extents = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("ddb") {
            continue;
        }
        let is_header = line
            .split_once('=')
            .is_some_and(|(key, _)| !key.contains(' '));
        if is_header {
            continue;
        }
        let access = line.split(' ').next().unwrap_or_default();
        if !["rw", "rdonly", "noaccess"].contains(&access) {
            return Err(UnsafeImage::VmdkDescriptor(
                "it has a line of unknown meaning",
            ));
        }
        if line.contains('/') {
            return Err(UnsafeImage::VmdkDescriptor("an extent names a path"));
        }
        extents += 1;
    }
    if extents == 0 {
        return Err(UnsafeImage::VmdkDescriptor("it names no extent"));
    }
    Ok(())
}

/// A stream-optimized file ends with a footer marker, a copy of the header
/// (which must agree with the first one) and an end-of-stream marker.
fn check_footer(image: &Image<'_>, head: &[u8]) -> io::Result<Result<(), &'static str>> {
    let tail_len = 3 * SECTOR;
    let Some(tail) = image
        .len
        .checked_sub(tail_len)
        .map(|at| image.exact(at, tail_len as usize))
        .transpose()?
        .flatten()
    else {
        return Ok(Err("the file is too short to hold one"));
    };
    let footer = &tail[512..1024];
    if footer[..4] != head[..4] || le32(footer, 4) != le32(head, 4) {
        return Ok(Err("its header does not match the first one"));
    }
    if footer[28..44] != head[28..44] {
        return Ok(Err("it names another descriptor than the header"));
    }
    if le64(footer, 56) == GD_AT_END {
        return Ok(Err("it points to yet another footer"));
    }
    if !is_marker(&tail[..512], 3) {
        return Ok(Err("its footer marker is invalid"));
    }
    if le64(&tail[1024..], 0) != 0 || !is_marker(&tail[1024..], 0) {
        return Ok(Err("its end-of-stream marker is invalid"));
    }
    Ok(Ok(()))
}

/// A marker sector: a value, size 0, this type, then zeros.
fn is_marker(sector: &[u8], kind: u32) -> bool {
    le32(sector, 8) == 0 && le32(sector, 12) == kind && sector[16..].iter().all(|&b| b == 0)
}
