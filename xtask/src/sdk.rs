//! `cargo xtask sdk`.

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask sdk` is not built yet")
}
