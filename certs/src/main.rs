//! `roomcast-certs`: writes a development CA and edge/backend certificates (see the crate docs
//! and `certs/README.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "roomcast-certs",
    about = "Generate roomcast's development CA and edge/backend certificates"
)]
struct Cli {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    out: PathBuf,
    /// DNS name or IP address the edge and backend certificates are valid for (repeatable).
    /// Default: localhost, 127.0.0.1 and ::1.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
    /// Replace existing certificates and keys.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let existing = roomcast_certs::existing(&cli.out);
    if !existing.is_empty() && !cli.force {
        eprintln!(
            "roomcast-certs: refusing to overwrite existing files in {}: {}",
            cli.out.display(),
            existing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        eprintln!("roomcast-certs: pass --force to replace them (a new CA: re-distribute ca.pem)");
        return ExitCode::FAILURE;
    }
    let hosts = if cli.hosts.is_empty() {
        roomcast_certs::default_hosts()
    } else {
        cli.hosts
    };
    match roomcast_certs::generate(&cli.out, &hosts) {
        Ok(g) => {
            for p in g.all() {
                println!("wrote {}", p.display());
            }
            println!(
                "edge and backend certificates valid for: {}",
                hosts.join(", ")
            );
            println!(
                "*.key files are private keys: never share or commit them (they are git-ignored)."
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomcast-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
