use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// Builds the kernel programs (chaos-ebpf) with nightly for bpfel-unknown-none and leaves the
/// object in OUT_DIR, where `src/bpf/mod.rs` embeds it.
fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("chaos-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "chaos-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
    .context("building chaos-ebpf (run `cargo xtask setup` if bpf-linker or rust-src is missing)")
}
