//! The command line: `serve` (default), `migrate`, `token`.

use clap::{Parser, Subcommand};
use shadower_actors::domain::duration::HubDuration;

#[derive(Debug, Parser)]
#[command(
    name = "shadower-hub",
    version,
    about = "Real-time analytics hub for AI agents."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (the default).
    Serve {
        /// Do not apply pending migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Print a signed JWT for the configured secret.
    Token {
        /// Workspace the token grants (repeat for several).
        #[arg(long = "workspace", required = true)]
        workspaces: Vec<String>,
        /// Space-separated scopes.
        #[arg(long, default_value = "ingest read admin")]
        scope: String,
        /// Lifetime, e.g. 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: HubDuration,
        /// The `sub` claim.
        #[arg(long, default_value = "shadower-hub-cli")]
        sub: String,
        /// Sign with this entry of auth.jwt_secrets instead of auth.jwt_secret.
        #[arg(long)]
        kid: Option<String>,
    },
}
