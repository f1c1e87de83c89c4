use anyhow::Context as _;
use clap::Parser;
use shadower_hub::cli::{Cli, Command};
use shadower_hub::settings::Settings;
use shadower_hub::startup::Application;
use shadower_hub::telemetry;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shadower-hub: {e}");
            std::process::exit(2);
        }
    };
    telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve { no_migrate: false }) {
        Command::Serve { no_migrate } => {
            telemetry::raise_fd_limit();
            let app = Application::build(settings, !no_migrate).await?;
            app.run_until_stopped().await
        }
        Command::Migrate => {
            let db = &settings.database;
            shadower_actors::store::ensure_database(db).await?;
            let pool = shadower_actors::store::create_pool(db, 1)?;
            let n = shadower_actors::store::migrate(&pool)
                .await
                .context("Applying migrations")?;
            println!("applied {n} migration(s)");
            Ok(())
        }
        Command::Token {
            workspaces,
            scope,
            ttl,
            sub,
            kid,
        } => {
            let secret = match &kid {
                Some(kid) => settings
                    .auth
                    .jwt_secrets
                    .iter()
                    .find(|k| &k.kid == kid)
                    .map(|k| k.secret.clone())
                    .with_context(|| format!("no auth.jwt_secrets entry with kid {kid}"))?,
                None => settings.auth.jwt_secret.clone(),
            };
            let exp = chrono::Utc::now() + ttl.to_chrono();
            let claims = shadower_handlers::auth::Claims {
                sub,
                exp: exp.timestamp() as u64,
                workspaces,
                scope,
                iat: Some(chrono::Utc::now().timestamp() as u64),
            };
            println!(
                "{}",
                shadower_handlers::auth::sign(&secret, kid.as_deref(), &claims)?
            );
            Ok(())
        }
    }
}
