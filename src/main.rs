//! The `openstack-image-helper` binary: all of it lives in the library.

fn main() {
    std::process::exit(openstack_image_helper::cli::main());
}
