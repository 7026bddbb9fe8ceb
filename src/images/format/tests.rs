//! Each format made by `qemu-img` (Debian's `qemu-utils`), as Glance's own
//! inspector tests make them, and each unsafe case.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const MIB: u64 = 1 << 20;

fn qemu_img(args: &[&str], dir: &Path) {
    let out = Command::new("qemu-img")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("qemu-img (Debian's qemu-utils) must be installed");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `qemu-img create -f FORMAT [-o OPTIONS] NAME 10M` in `dir`.
fn create(dir: &Path, format: &str, options: &str, name: &str) -> PathBuf {
    let mut args = vec!["create", "-q", "-f", format];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([name, "10M"]);
    qemu_img(&args, dir);
    dir.join(name)
}

fn inspect_path(path: &Path) -> Result<Inspection, UnsafeImage> {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    inspect(&Image::new(&file, len)).unwrap()
}

/// qemu-img's own view of the virtual size.
fn qemu_virtual_size(path: &Path) -> u64 {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

#[test]
fn every_format_is_detected_with_its_virtual_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (format, options, name, expected) in [
        ("qcow2", "", "a.qcow2", DiskFormat::Qcow2),
        ("qcow2", "compat=0.10", "v2.qcow2", DiskFormat::Qcow2),
        ("vmdk", "", "a.vmdk", DiskFormat::Vmdk),
        (
            "vmdk",
            "subformat=streamOptimized",
            "s.vmdk",
            DiskFormat::Vmdk,
        ),
        ("vpc", "", "a.vhd", DiskFormat::Vhd),
        ("vhdx", "", "a.vhdx", DiskFormat::Vhdx),
        ("vdi", "", "a.vdi", DiskFormat::Vdi),
        ("raw", "", "a.raw", DiskFormat::Raw),
    ] {
        let path = create(d, format, options, name);
        let found = inspect_path(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(found.format, expected, "{name}");
        assert_eq!(found.virtual_size, qemu_virtual_size(&path), "{name}");
    }
}

#[test]
fn converted_images_with_data_are_detected() {
    // Files with data in them, as an image build leaves them: a raw disk with
    // a partition table and bytes, converted to each format.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("disk.raw");
    let mut bytes = vec![0u8; 4 * MIB as usize];
    bytes[446 + 4] = 0x83; // one Linux partition
    bytes[446 + 8] = 1;
    bytes[446 + 12] = 0x10;
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    for (i, b) in bytes[MIB as usize..2 * MIB as usize].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    std::fs::write(&raw, &bytes).unwrap();
    assert_eq!(inspect_path(&raw).unwrap().format, DiskFormat::Raw);
    for (format, options, name, expected) in [
        ("qcow2", "", "c.qcow2", DiskFormat::Qcow2),
        (
            "vmdk",
            "subformat=streamOptimized",
            "c.vmdk",
            DiskFormat::Vmdk,
        ),
        (
            "vmdk",
            "subformat=monolithicSparse",
            "m.vmdk",
            DiskFormat::Vmdk,
        ),
        ("vpc", "", "c.vhd", DiskFormat::Vhd),
        ("vhdx", "", "c.vhdx", DiskFormat::Vhdx),
    ] {
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", format];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        args.extend(["disk.raw", name]);
        qemu_img(&args, d);
        let found = inspect_path(&d.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(found.format, expected, "{name}");
        assert_eq!(
            found.virtual_size,
            qemu_virtual_size(&d.join(name)),
            "{name}"
        );
    }
}

#[test]
fn a_qcow2_with_a_backing_file_or_a_data_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    create(d, "qcow2", "", "base.qcow2");
    qemu_img(
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "top.qcow2",
        ],
        d,
    );
    assert_eq!(
        inspect_path(&d.join("top.qcow2")),
        Err(UnsafeImage::BackingFile)
    );
    let data = create(d, "qcow2", "data_file=data.raw", "data.qcow2");
    assert_eq!(inspect_path(&data), Err(UnsafeImage::DataFile));
    let extended = create(d, "qcow2", "extended_l2=on", "l2.qcow2");
    assert_eq!(
        inspect_path(&extended),
        Err(UnsafeImage::Qcow2Features(1 << 4))
    );
}

#[test]
fn a_vmdk_that_is_not_one_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (subformat, kind) in [
        ("twoGbMaxExtentSparse", "twogbmaxextentsparse"),
        ("twoGbMaxExtentFlat", "twogbmaxextentflat"),
        ("monolithicFlat", "monolithicflat"),
    ] {
        let path = create(d, "vmdk", &format!("subformat={subformat}"), "split.vmdk");
        let err = inspect_path(&path).unwrap_err();
        assert_eq!(
            err,
            UnsafeImage::VmdkDescriptorFile(kind.into()),
            "{subformat}"
        );
        assert!(err.to_string().contains("other files"), "{err}");
        // An extent of a split sparse vmdk, sent alone, has no descriptor.
        if subformat == "twoGbMaxExtentSparse" {
            assert_eq!(
                inspect_path(&d.join("split-s001.vmdk")),
                Err(UnsafeImage::VmdkDescriptor("it has no createType"))
            );
        }
        for entry in std::fs::read_dir(d).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
}

#[test]
fn a_vmdk_descriptor_naming_a_path_or_unknown_lines_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = create(dir.path(), "vmdk", "", "a.vmdk");
    let original = std::fs::read(&path).unwrap();
    let text_at = 512;
    let text_end = text_at + original[text_at..].iter().position(|&b| b == 0).unwrap();
    let text = String::from_utf8(original[text_at..text_end].to_vec()).unwrap();
    for (from, to, says) in [
        ("\"a.vmdk\"", "\"/etc/shadow\"", "names a path"),
        ("# Extent description", "something odd", "unknown meaning"),
        ("RW ", "XX ", "unknown meaning"),
    ] {
        let edited = text.replacen(from, to, 1);
        assert_ne!(edited, text, "{from}");
        let mut bytes = original.clone();
        bytes[text_at..text_end].fill(0);
        bytes[text_at..text_at + edited.len()].copy_from_slice(edited.as_bytes());
        let err = inspect_bytes(&bytes[..], bytes.len() as u64).unwrap_err();
        assert!(err.to_string().contains(says), "{from}: {err}");
    }
}

#[test]
fn qed_and_luks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let qed = create(dir.path(), "qed", "", "a.qed");
    assert!(matches!(inspect_path(&qed), Err(UnsafeImage::Refused(_))));
    let luks = b"LUKS\xba\xbe\0\x01rest of a header";
    let verdict = inspect_bytes(&luks[..], luks.len() as u64);
    assert!(
        matches!(verdict, Err(UnsafeImage::Refused(_))),
        "{verdict:?}"
    );
}

/// A minimal ISO 9660: 16 empty sectors, a primary volume descriptor of
/// `blocks` 2048-byte blocks, a terminator. No tool in Debian's base makes an
/// ISO (qemu-img does not), so the test writes the two sectors that matter.
pub(super) fn iso(blocks: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; 18 * 2048];
    let pvd = &mut bytes[16 * 2048..17 * 2048];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[80..84].copy_from_slice(&blocks.to_le_bytes());
    pvd[84..88].copy_from_slice(&blocks.to_be_bytes());
    pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
    pvd[130..132].copy_from_slice(&2048u16.to_be_bytes());
    let end = &mut bytes[17 * 2048..];
    end[0] = 255;
    end[1..6].copy_from_slice(b"CD001");
    bytes
}

#[test]
fn an_iso_is_detected_and_a_hybrid_one_is_an_iso() {
    let mut bytes = iso(18);
    let found = inspect_bytes(&bytes[..], bytes.len() as u64).unwrap();
    assert_eq!(found.format, DiskFormat::Iso);
    assert_eq!(found.virtual_size, 18 * 2048);
    // A bootable hybrid ISO: an MBR in the system area.
    bytes[446 + 4] = 0x17;
    bytes[446 + 8] = 1;
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    let found = inspect_bytes(&bytes[..], bytes.len() as u64).unwrap();
    assert_eq!(found.format, DiskFormat::Iso);
}

#[test]
fn one_header_hiding_another_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = create(dir.path(), "vpc", "", "a.vhd");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.resize(40 * 1024, 0);
    bytes[32 * 1024..34 * 1024].copy_from_slice(&iso(20)[32 * 1024..34 * 1024]);
    let verdict = inspect_bytes(&bytes[..], bytes.len() as u64);
    assert_eq!(
        verdict,
        Err(UnsafeImage::SeveralFormats(vec!["vhd", "iso"]))
    );
}

#[test]
fn a_bad_mbr_is_refused_as_glance_refuses_it() {
    let mut bytes = vec![0u8; 4096];
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    let verdict = |b: &[u8]| inspect_bytes(b, b.len() as u64);
    assert!(matches!(verdict(&bytes), Err(UnsafeImage::Mbr(m)) if m.contains("no partition")));
    bytes[446] = 0x42;
    bytes[446 + 4] = 0x83;
    assert!(matches!(verdict(&bytes), Err(UnsafeImage::Mbr(m)) if m.contains("boot flag")));
    bytes[446] = 0x80;
    assert_eq!(verdict(&bytes).unwrap().format, DiskFormat::Raw);
    // A FAT boot sector is no MBR.
    let mut fat = vec![0u8; 4096];
    fat[0x10] = 2;
    fat[0x15] = 0xf8;
    fat[510] = 0x55;
    fat[511] = 0xaa;
    assert_eq!(verdict(&fat).unwrap().format, DiskFormat::Raw);
}

#[test]
fn short_and_empty_files_are_raw_and_cut_headers_refused() {
    for bytes in [&b""[..], b"QF", b"hello", &[0u8; 100]] {
        let found = inspect_bytes(bytes, bytes.len() as u64).unwrap();
        assert_eq!(found.format, DiskFormat::Raw, "{bytes:?}");
        assert_eq!(found.virtual_size, bytes.len() as u64);
    }
    let cut = b"QFI\xfb\0\0\0\x03rest";
    let verdict = inspect_bytes(&cut[..], cut.len() as u64);
    assert!(matches!(
        verdict,
        Err(UnsafeImage::Malformed {
            format: "qcow2",
            ..
        })
    ));
}

#[test]
fn a_declared_format_must_match_the_content() {
    let found = |format| Inspection {
        format,
        virtual_size: 1,
    };
    let bare = ContainerFormat::Bare;
    use DiskFormat::*;
    // No declared format: the detected one.
    assert_eq!(judge(&found(Vmdk), None, bare), Ok(Vmdk));
    for (detected, declared) in [
        (Qcow2, Qcow2),
        (Raw, Raw),
        (Raw, Ami),
        (Raw, Aki),
        (Iso, Raw),
    ] {
        assert_eq!(judge(&found(detected), Some(declared), bare), Ok(declared));
    }
    for (detected, declared) in [
        (Qcow2, Raw),
        (Vmdk, Raw),
        (Raw, Qcow2),
        (Raw, Iso),
        (Raw, Vhd),
        (Vhdx, Vhd),
        (Iso, Qcow2),
    ] {
        let err = judge(&found(detected), Some(declared), bare).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the file is {detected} but disk_format says {declared}")
        );
    }
    // Inside a container (an OVA is a tar file), the content is no disk.
    assert_eq!(
        judge(&found(Raw), Some(Vmdk), ContainerFormat::Ova),
        Ok(Vmdk)
    );
}

#[test]
fn a_stream_optimized_vmdk_with_a_footer_is_checked() {
    // qemu-img writes the grain directory offset in the header; VMware's
    // tools write "at the end" and a footer: build one from qemu's file.
    let dir = tempfile::tempdir().unwrap();
    let path = create(dir.path(), "vmdk", "subformat=streamOptimized", "s.vmdk");
    let original = std::fs::read(&path).unwrap();
    let header = original[..512].to_vec();
    let mut bytes = original.clone();
    bytes[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    let marker = |kind: u32| {
        let mut sector = vec![0u8; 512];
        sector[12..16].copy_from_slice(&kind.to_le_bytes());
        sector
    };
    bytes.extend(marker(3));
    bytes.extend(&header);
    bytes.extend(marker(0));
    let found = inspect_bytes(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(found.format, DiskFormat::Vmdk);
    assert_eq!(found.virtual_size, 10 * MIB);

    let end = bytes.len();
    for (at, value, says) in [
        (end - 512 + 12, 7u8, "end-of-stream"),
        (end - 1536 + 12, 1, "footer marker"),
        (end - 1024 + 28, 9, "another descriptor"),
        (end - 1024 + 4, 9, "does not match"),
    ] {
        let mut bad = bytes.clone();
        bad[at] = value;
        let err = inspect_bytes(&bad, bad.len() as u64).unwrap_err();
        assert!(matches!(err, UnsafeImage::VmdkFooter(_)), "{says}: {err}");
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
}

#[test]
fn a_descriptor_file_of_a_monolithic_type_is_refused_too() {
    // Its data is in the extent it names, whatever its type says.
    let text = b"# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"x.vmdk\"\n";
    assert_eq!(
        inspect_bytes(text, text.len() as u64),
        Err(UnsafeImage::VmdkDescriptorFile("monolithicsparse".into()))
    );
    // Text that is no descriptor is raw.
    let text = b"just some text\n";
    assert_eq!(
        inspect_bytes(text, text.len() as u64).unwrap().format,
        DiskFormat::Raw
    );
}
