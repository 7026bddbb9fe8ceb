//! What an image file is, judged from its content before a byte is sent, as
//! Glance's format inspector (`oslo_utils.imageutils.format_inspector`) judges
//! it on arrival: the same formats, the same choice among several matches, the
//! same safety checks. Refusing here gives the caller the reason (`422
//! unsafe_image`) where Glance would answer a bare 415, and catches the one
//! case Glance lets through: a qcow2 (or vmdk, ...) declared `raw`, which
//! then boots as garbage.
//!
//! Only headers and metadata are read, each read bounded ([`MAX_READ`]) and at
//! offsets checked against the file's length: the file is the caller's, its
//! offsets and lengths are not trusted. No crate does this (crates.io has
//! readers of single formats, none with Glance's safety rules), hence the code.
//!
//! One file per family: [`qcow2`] (and QED), [`vmdk`], [`vhd`] (VHD and VHDX),
//! [`disc`] (ISO and the MBR/GPT of a raw disk), [`other`] (VDI, LUKS).

mod disc;
mod other;
mod qcow2;
mod vhd;
mod vmdk;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::io;

use crate::openstack::glance::{ContainerFormat, DiskFormat};

/// The most any one read takes (a vmdk's descriptor, 1 MiB - 1, is the largest).
const MAX_READ: usize = 1 << 20;
/// The first bytes, read once: every header, and the ISO's volume descriptor
/// (sector 16 of 2048 bytes).
const HEAD_LEN: usize = 32 * 1024 + 2048;

/// A file read at offsets (a `File`, or bytes in tests).
pub(crate) trait ReadAt {
    /// Like `pread`: fills `buf` from `offset`, fewer bytes at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for &[u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// The file being judged: its bytes and its length at open time.
pub(crate) struct Image<'a> {
    bytes: &'a dyn ReadAt,
    len: u64,
}

impl<'a> Image<'a> {
    pub(crate) fn new(bytes: &'a dyn ReadAt, len: u64) -> Image<'a> {
        Image { bytes, len }
    }

    /// Up to `len` bytes (at most [`MAX_READ`]) from `offset`: fewer at the end
    /// of the file, none past it.
    fn region(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let available = self.len.saturating_sub(offset);
        let len = len
            .min(MAX_READ)
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            let at = offset + filled as u64;
            match self.bytes.read_at(&mut buf[filled..], at) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Exactly `len` bytes from `offset`, or `None` when the file ends first.
    fn exact(&self, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let bytes = self.region(offset, len)?;
        Ok((bytes.len() == len).then_some(bytes))
    }
}

/// What the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inspection {
    /// The disk format its content says (`raw` when no format matched).
    pub(crate) format: DiskFormat,
    /// The size of the disk it holds: from its header where the format has one
    /// (qcow2, vmdk, vhd, vhdx, vdi, iso), else the file's length. Conversion
    /// checks free space against it.
    pub(crate) virtual_size: u64,
}

/// Why a file is refused (`422 unsafe_image`); the text is the answer's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnsafeImage {
    #[error("the qcow2 has a backing file: part of its data would be read from another file")]
    BackingFile,
    #[error("the qcow2 has an external data file: its data would be read from another file")]
    DataFile,
    #[error("the qcow2 has incompatible features Glance does not allow (bits {0:#x})")]
    Qcow2Features(u64),
    #[error("the qcow2 is of version {0}; only versions 2 and 3 are allowed")]
    Qcow2Version(u32),
    #[error(
        "the vmdk is of type '{0}', not monolithic (monolithicSparse or streamOptimized): \
         its data is in other files"
    )]
    VmdkNotMonolithic(String),
    #[error("the vmdk is a descriptor file of type '{0}': its data is in other files")]
    VmdkDescriptorFile(String),
    #[error("the vmdk's descriptor is refused: {0}")]
    VmdkDescriptor(&'static str),
    #[error("the vmdk's footer is refused: {0}")]
    VmdkFooter(&'static str),
    #[error("the file's master boot record is refused (Glance refuses it too): {0}")]
    Mbr(String),
    #[error("the file is {0}")]
    Refused(&'static str),
    #[error("the file starts as a {format} but is not a valid one: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error(
        "the file matches several formats ({}): one header may hide another",
        .0.join(", ")
    )]
    SeveralFormats(Vec<&'static str>),
    #[error("the file is {detected} but disk_format says {declared}")]
    Contradicts {
        detected: DiskFormat,
        declared: DiskFormat,
    },
}

impl UnsafeImage {
    fn malformed(format: &'static str, reason: impl Into<String>) -> UnsafeImage {
        UnsafeImage::Malformed {
            format,
            reason: reason.into(),
        }
    }
}

/// A format's verdict on a file: `None` when the file is not of that format;
/// else its virtual size, or why it is refused.
type Probe = Option<Result<u64, UnsafeImage>>;

/// The formats looked for; `raw` is what matches when none does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Qcow2,
    Qed,
    Vhd,
    Vhdx,
    Vmdk,
    Vdi,
    Iso,
    /// A raw disk with an MBR (or a GPT behind its protective MBR).
    Gpt,
    Luks,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::Qcow2,
        Kind::Qed,
        Kind::Vhd,
        Kind::Vhdx,
        Kind::Vmdk,
        Kind::Vdi,
        Kind::Iso,
        Kind::Gpt,
        Kind::Luks,
    ];

    /// As Glance's inspector names it.
    fn name(self) -> &'static str {
        match self {
            Kind::Qcow2 => "qcow2",
            Kind::Qed => "qed",
            Kind::Vhd => "vhd",
            Kind::Vhdx => "vhdx",
            Kind::Vmdk => "vmdk",
            Kind::Vdi => "vdi",
            Kind::Iso => "iso",
            Kind::Gpt => "gpt",
            Kind::Luks => "luks",
        }
    }

    /// The Glance disk format of a file of this kind (a partitioned disk is raw).
    fn disk_format(self) -> DiskFormat {
        match self {
            Kind::Qcow2 => DiskFormat::Qcow2,
            Kind::Vhd => DiskFormat::Vhd,
            Kind::Vhdx => DiskFormat::Vhdx,
            Kind::Vmdk => DiskFormat::Vmdk,
            Kind::Vdi => DiskFormat::Vdi,
            Kind::Iso => DiskFormat::Iso,
            Kind::Gpt | Kind::Qed | Kind::Luks => DiskFormat::Raw,
        }
    }

    fn probe(self, image: &Image<'_>, head: &[u8]) -> io::Result<Probe> {
        Ok(match self {
            Kind::Qcow2 => qcow2::probe_qcow2(head),
            Kind::Qed => qcow2::probe_qed(head),
            Kind::Vhd => vhd::probe_vhd(head),
            Kind::Vhdx => vhd::probe_vhdx(image, head)?,
            Kind::Vmdk => vmdk::probe(image, head)?,
            Kind::Vdi => other::probe_vdi(head),
            Kind::Iso => disc::probe_iso(image, head),
            Kind::Gpt => disc::probe_mbr(image, head),
            Kind::Luks => other::probe_luks(head),
        })
    }
}

/// What `image` is, or why it is refused whatever it is declared as. Reads
/// only headers and metadata; an error is the file's (a failed read).
pub(crate) fn inspect(image: &Image<'_>) -> io::Result<Result<Inspection, UnsafeImage>> {
    let head = image.region(0, HEAD_LEN)?;
    let mut found = Vec::new();
    for kind in Kind::ALL {
        if let Some(verdict) = kind.probe(image, &head)? {
            found.push((kind, verdict));
        }
    }
    // A bootable ISO may carry an MBR in its system area: Glance takes it as
    // an ISO. Any other pair is refused, as Glance refuses it.
    if found.len() == 2 && found.iter().any(|(k, _)| *k == Kind::Iso) {
        found.retain(|(k, _)| *k != Kind::Gpt);
    }
    if found.len() > 1 {
        let names = found.iter().map(|(k, _)| k.name()).collect();
        return Ok(Err(UnsafeImage::SeveralFormats(names)));
    }
    Ok(match found.pop() {
        None => Ok(Inspection {
            format: DiskFormat::Raw,
            virtual_size: image.len,
        }),
        Some((kind, verdict)) => verdict.map(|virtual_size| Inspection {
            format: kind.disk_format(),
            virtual_size,
        }),
    })
}

/// [`inspect`] of bytes in memory, whose length at "open time" is `len`.
#[cfg(test)]
fn inspect_bytes(bytes: &[u8], len: u64) -> Result<Inspection, UnsafeImage> {
    inspect(&Image::new(&bytes, len)).expect("reading memory")
}

/// The disk format to give Glance: the detected one, or the declared one when
/// it does not contradict the content. Glance's own rules, except that a
/// format declared `raw` must be raw (Glance lets that through with a warning,
/// and the image then boots wrong); an ISO is raw bytes and may be declared so.
pub(crate) fn judge(
    found: &Inspection,
    declared: Option<DiskFormat>,
    container: ContainerFormat,
) -> Result<DiskFormat, UnsafeImage> {
    let Some(declared) = declared else {
        return Ok(found.format);
    };
    let agrees = declared == found.format
        // Glance inspects bare images only: a container's content is not a disk.
        || container != ContainerFormat::Bare
        // Formats no inspector knows: Glance takes unrecognised content for them.
        || (found.format == DiskFormat::Raw
            && matches!(
                declared,
                DiskFormat::Ami | DiskFormat::Ari | DiskFormat::Aki | DiskFormat::Ploop
            ))
        || (found.format == DiskFormat::Iso && declared == DiskFormat::Raw);
    if agrees {
        Ok(declared)
    } else {
        Err(UnsafeImage::Contradicts {
            detected: found.format,
            declared,
        })
    }
}

/// Big-endian and little-endian integers at an offset of a header whose
/// length was checked by the caller; a short header reads as zeros.
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(b, at))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(b, at))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(b, at))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(b, at))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(b, at))
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        out.copy_from_slice(src);
    }
    out
}
