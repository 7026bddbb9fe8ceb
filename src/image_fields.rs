//! The closed sets of Glance's image fields: disk and container formats, and
//! visibility. A leaf: the clouds' settings (`image_format`), the OpenStack
//! client and the image logic all read them.

closed_set! {
    /// A disk format Glance knows.
    pub(crate) enum DiskFormat {
        Ami = "ami",
        Ari = "ari",
        Aki = "aki",
        Vhd = "vhd",
        Vhdx = "vhdx",
        Vmdk = "vmdk",
        Raw = "raw",
        Qcow2 = "qcow2",
        Vdi = "vdi",
        Iso = "iso",
        Ploop = "ploop",
    }
}

closed_set! {
    /// A container format Glance knows.
    pub(crate) enum ContainerFormat {
        Bare = "bare",
        Ovf = "ovf",
        Aki = "aki",
        Ari = "ari",
        Ami = "ami",
        Ova = "ova",
        Docker = "docker",
        Compressed = "compressed",
    }
}

closed_set! {
    /// Who may see an image.
    pub(crate) enum Visibility {
        Private = "private",
        Shared = "shared",
        Community = "community",
        Public = "public",
    }
}
