//! The `flowmesh` command.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flowmesh",
    version,
    about = "Run, validate and inspect FlowMesh flowgraphs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a FlowGraph file on the local runtime.
    Run { file: PathBuf },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let (doc, report) = flowmesh_model::validate::validate_text(&text);
            if !report.is_ok() {
                bail!("{} is invalid:\n{report}", file.display());
            }
            let doc = doc.unwrap();
            let g = flowmesh_runtime::Graph::from_spec(&doc.spec)?;
            let r = flowmesh_runtime::run(g)?;
            for s in &r.stats {
                println!(
                    "{:>10} in {:>14} out {:>14}",
                    s.name,
                    s.items_in(),
                    s.items_out()
                );
            }
            println!("elapsed {:.3} s", r.elapsed.as_secs_f64());
        }
    }
    Ok(())
}
