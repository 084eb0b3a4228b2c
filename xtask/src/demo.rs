//! placeholder
use anyhow::Result;
#[derive(clap::Args)]
pub struct Options {}
pub fn run(_o: Options) -> Result<()> { anyhow::bail!("not yet") }
