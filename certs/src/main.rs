//! `roomcast-certs`: writes a development CA and edge/backend certificates.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "roomcast-certs",
    about = "Generate roomcast's development CA and edge/backend certificates"
)]
struct Cli {
    /// Directory to write into.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Name or IP the certificates are valid for (repeatable); default localhost, 127.0.0.1, ::1.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

fn main() {
    let cli = Cli::parse();
    let existing = roomcast_certs::existing(&cli.out);
    if !existing.is_empty() && !cli.force {
        eprintln!(
            "roomcast-certs: {} already holds {}; pass --force to replace them",
            cli.out.display(),
            existing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::process::exit(1);
    }
    let hosts = if cli.hosts.is_empty() {
        roomcast_certs::default_hosts()
    } else {
        cli.hosts
    };
    match roomcast_certs::generate(&cli.out, &hosts) {
        Ok(g) => {
            for p in [
                &g.ca_cert,
                &g.ca_key,
                &g.edge_cert,
                &g.edge_key,
                &g.backend_cert,
                &g.backend_key,
            ] {
                println!("wrote {}", p.display());
            }
            println!("valid for: {}", hosts.join(", "));
            println!("*.key files are private keys: keep them out of version control (git-ignored here).");
        }
        Err(e) => {
            eprintln!("roomcast-certs: {e:#}");
            std::process::exit(1);
        }
    }
}
