//! `modelyard`: the server, its administration, and a client for a running server, in one binary.
#![forbid(unsafe_code)]

/// `println!` that ends the program quietly when stdout is closed (`modelyard audit | head`)
/// instead of panicking, as a command-line tool should.
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(141);
        }
    }};
}

mod admin;
mod commands;
mod flags;
mod input;
mod output;
mod push;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use modelyard_server::defaults;

const DEFAULT_URL: &str = "http://127.0.0.1:5080";

/// modelyard: a self-hosted model platform that speaks Replicate's HTTP API.
#[derive(Parser, Debug)]
#[command(name = "modelyard", version)]
pub struct Cli {
    /// The server's URL, without /v1 (for the client commands).
    #[arg(
        long,
        global = true,
        env = "MODELYARD_URL",
        default_value = DEFAULT_URL
    )]
    pub url: String,
    /// The API token (for the client commands).
    #[arg(long, global = true, env = "MODELYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage accounts and tokens, directly in the database (no server needed).
    Admin(AdminArgs),
    /// Show the account the token belongs to.
    Account,
    /// List the hardware models can run on.
    Hardware,
    /// Create, show, change and delete models.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// List, show and delete versions of a model.
    #[command(subcommand)]
    Versions(VersionsCmd),
    /// Push a Cog project directory as a new version of a model; prints the version id last.
    Push {
        /// The model, as OWNER/NAME.
        model: String,
        /// The project directory (with cog.yaml and the predictor).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run predictions and look at them.
    #[command(subcommand)]
    Predictions(PredictionsCmd),
    /// Fine-tune versions and look at the trainings.
    #[command(subcommand)]
    Trainings(TrainingsCmd),
    /// Create, show, change and delete deployments.
    #[command(subcommand)]
    Deployments(DeploymentsCmd),
    /// List, restore and purge what was deleted (the trash keeps it for a while).
    #[command(subcommand)]
    Trash(TrashCmd),
    /// Show how many bytes your account stores, and what purging its trash would free.
    Storage,
    /// Show the audit log: deletions and refused deletions.
    Audit {
        /// Follow every page instead of showing the first.
        #[arg(long)]
        all: bool,
    },
}

/// Where the data lives: shared by `serve` and `admin`.
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// The directory for the SQLite database (unless --database-url says otherwise) and the
    /// pushed projects.
    #[arg(
        long,
        global = true,
        env = "MODELYARD_DATA_DIR",
        default_value = defaults::DATA_DIR
    )]
    pub data_dir: PathBuf,
    /// sqlite://PATH or postgres://...; by default the SQLite file in the data directory.
    #[arg(
        long,
        global = true,
        env = "MODELYARD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "MODELYARD_ADDR", default_value = defaults::ADDR)]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// The base of every absolute URL in responses (default: http://ADDR).
    #[arg(long, env = "MODELYARD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The Python that has Cog installed.
    #[arg(long, env = "MODELYARD_PYTHON", default_value = defaults::PYTHON)]
    pub python: String,
    /// The largest accepted push (a project, compressed, and unpacked), in MiB. Pushes are
    /// streamed to disk, so this bounds disk, not memory. Files for `/v1/files` stay capped at
    /// 100 MiB.
    #[arg(long, env = "MODELYARD_MAX_UPLOAD_MB", default_value_t = defaults::MAX_UPLOAD_MB)]
    pub max_upload_mb: u64,
    /// How long a disabled deployment must stay unused before it can be deleted, in seconds.
    #[arg(long, env = "MODELYARD_DEPLOYMENT_IDLE_SECS", default_value_t = defaults::DEPLOYMENT_IDLE_SECS)]
    pub deployment_idle_secs: u64,
    /// Serve the API only: leave queued predictions and trainings to another server.
    #[arg(long, env = "MODELYARD_NO_RUNNER", value_parser = flags::boolish())]
    pub no_runner: bool,
    /// How many Cog model servers may run at once.
    #[arg(long, env = "MODELYARD_MAX_SERVERS", default_value_t = defaults::MAX_SERVERS)]
    pub max_servers: usize,
    /// How long an unused model server stays warm, in seconds.
    #[arg(long, env = "MODELYARD_SERVER_IDLE_SECS", default_value_t = defaults::SERVER_IDLE_SECS)]
    pub server_idle_secs: u64,
    /// How long a model server may take to set up, in seconds.
    #[arg(long, env = "MODELYARD_SETUP_TIMEOUT_SECS", default_value_t = defaults::SETUP_TIMEOUT_SECS)]
    pub setup_timeout_secs: u64,
    /// How long API predictions keep their input, output, files and logs, in seconds.
    #[arg(long, env = "MODELYARD_API_RETENTION_SECS", default_value_t = defaults::API_RETENTION_SECS)]
    pub api_retention_secs: u64,
    /// How many days a deleted model or version stays in its owner's trash, to be restored;
    /// 0 deletes at once and for good.
    #[arg(long, env = "MODELYARD_TRASH_DAYS", default_value_t = defaults::TRASH_DAYS)]
    pub trash_days: u64,
    /// Also allow webhooks to http URLs and to private, loopback and link-local addresses
    /// (a self-hosted network often needs them); without it such targets are refused.
    #[arg(long, env = "MODELYARD_ALLOW_PRIVATE_WEBHOOKS", value_parser = flags::boolish())]
    pub allow_private_webhooks: bool,
    /// Run pushed model code UNCONFINED, as this server's user, with the whole host in view.
    /// Only for hosts that cannot sandbox, and only when every account is fully trusted.
    #[arg(long, env = "MODELYARD_UNSAFE_NO_SANDBOX", value_parser = flags::boolish())]
    pub unsafe_no_sandbox: bool,
    /// Whether model code may reach the internet (to fetch weights at setup, and for
    /// `pip install`): on or off. Never this host or its private networks either way.
    #[arg(long, env = "MODELYARD_MODEL_EGRESS", default_value = "on", value_parser = flags::boolish(), action = clap::ArgAction::Set)]
    pub model_egress: bool,
    /// Memory each model server may use, everything it starts included, in MiB (0: no cap).
    #[arg(long, env = "MODELYARD_MODEL_MEMORY_MB", default_value_t = defaults::MODEL_MEMORY_MB)]
    pub model_memory_mb: u64,
    /// Processes and threads each model server may have at once.
    #[arg(long, env = "MODELYARD_MODEL_MAX_PROCESSES", default_value_t = defaults::MODEL_MAX_PROCESSES)]
    pub model_max_processes: u64,
    /// Size of each model server's private /tmp and scratch directory, in MiB.
    #[arg(long, env = "MODELYARD_MODEL_SCRATCH_MB", default_value_t = defaults::MODEL_SCRATCH_MB)]
    pub model_scratch_mb: u64,
    /// This node's GPUs for model servers: none, all, a list such as 0,1, or auto (all when
    /// this host has an NVIDIA driver). Each server of a version whose cog.yaml sets build.gpu
    /// gets one to itself; other servers get none.
    #[arg(long, env = "MODELYARD_GPUS", default_value = "auto")]
    pub gpus: String,
    /// What this node runs: all (API, web UI and models: one machine), api (the API and web
    /// UI only) or worker (models only). api and worker need PostgreSQL and --blob-store.
    #[arg(long, env = "MODELYARD_ROLE", default_value = "all", value_parser = modelyard_server::Role::parse)]
    pub role: modelyard_server::Role,
    /// The hardware this node's models may ask for, names from /v1/hardware (comma-separated
    /// or repeated; default: every kind).
    #[arg(long, env = "MODELYARD_HARDWARE", value_delimiter = ',')]
    pub hardware: Vec<String>,
    /// Where artifacts, weights, outputs and files live: the data directory (default) or an
    /// S3-compatible bucket, s3://bucket/prefix (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY and AWS_REGION say where and as whom).
    #[arg(long, env = "MODELYARD_BLOB_STORE")]
    pub blob_store: Option<String>,
    /// How much a node keeps of each of its caches, in GiB: artifacts and weights fetched from
    /// the object store, and built Python environments (least recently used go first).
    #[arg(long, env = "MODELYARD_WORKER_CACHE_GB", default_value_t = defaults::WORKER_CACHE_GB)]
    pub worker_cache_gb: u64,
    /// How long a worker's hold on a running job lasts unless renewed, in seconds: a worker
    /// that vanishes has its jobs failed or queued again after this long.
    #[arg(long, env = "MODELYARD_LEASE_SECS", default_value_t = defaults::LEASE_SECS)]
    pub lease_secs: u64,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: AdminCmd,
}

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Users.
    #[command(subcommand)]
    User(UserCmd),
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCmd),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user; prints its first API token as the last line.
    Create {
        name: String,
        /// The name shown to people (default: the user name).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Set a user's password for signing in to the web UI; reads it from standard input
    /// (the first line), so it never shows in the process list or shell history.
    SetPassword { name: String },
}

#[derive(Subcommand, Debug)]
pub enum OrgCmd {
    /// Create an organization with its first members.
    Create {
        name: String,
        /// A user who belongs to the organization (repeat for more).
        #[arg(long = "member", value_name = "USER", required = true)]
        members: Vec<String>,
        /// The name shown to people (default: the organization name).
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Add a user to an organization.
    AddMember { org: String, user: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create another API token for a user or an organization; prints it as the last line.
    Create { account: String },
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Only say whether it could be deleted, and what stands in the way (exit 1 if it cannot).
    #[arg(long)]
    pub dry_run: bool,
}

/// Deleting a model or a version, which the server may keep in its trash for a while.
#[derive(Args, Debug)]
pub struct TrashableDeleteArgs {
    /// Only say whether it could be deleted, what stands in the way (exit 1 if it cannot) and
    /// how many bytes it would free.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete it for good at once instead of to the trash (also for what is in the trash).
    #[arg(long, conflicts_with = "dry_run")]
    pub purge: bool,
}

#[derive(Subcommand, Debug)]
pub enum TrashCmd {
    /// List the trashes of the accounts you act for, most recently deleted first.
    List {
        /// Only this account's (you or an organization you belong to).
        #[arg(long)]
        owner: Option<String>,
    },
    /// Bring back a model (OWNER/NAME) or a version (OWNER/NAME:VERSION_ID).
    Restore {
        /// OWNER/NAME or OWNER/NAME:VERSION_ID
        item: String,
    },
    /// Delete a model or a version in the trash for good, now.
    Purge {
        /// OWNER/NAME or OWNER/NAME:VERSION_ID
        item: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// Create a model.
    Create {
        /// OWNER/NAME (the owner is you or an organization you belong to).
        model: String,
        #[arg(long, default_value = "private", value_parser = ["public", "private"])]
        visibility: String,
        /// A hardware sku (see `modelyard hardware`).
        #[arg(long, default_value = "cpu")]
        hardware: String,
        #[command(flatten)]
        fields: ModelFields,
    },
    /// Show a model.
    Get { model: String },
    /// List the models you can see.
    List {
        /// Follow every page instead of showing the first.
        #[arg(long)]
        all: bool,
    },
    /// Search models by name, owner or description.
    Search {
        query: String,
        #[arg(long)]
        all: bool,
    },
    /// Change a model (an empty value clears a text field).
    Update {
        model: String,
        #[arg(long, value_parser = ["public", "private"])]
        visibility: Option<String>,
        #[arg(long)]
        hardware: Option<String>,
        #[command(flatten)]
        fields: ModelFields,
    },
    /// Delete a model (it must be private and have no versions outside the trash).
    Delete {
        model: String,
        #[command(flatten)]
        d: TrashableDeleteArgs,
    },
}

#[derive(Args, Debug, Default)]
pub struct ModelFields {
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub github_url: Option<String>,
    #[arg(long)]
    pub paper_url: Option<String>,
    #[arg(long)]
    pub license_url: Option<String>,
    #[arg(long)]
    pub cover_image_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum VersionsCmd {
    /// List a model's versions, newest first.
    List {
        /// OWNER/NAME
        model: String,
        #[arg(long)]
        all: bool,
    },
    /// Show a version.
    Get {
        /// OWNER/NAME:VERSION_ID
        version: String,
    },
    /// Delete a version.
    Delete {
        /// OWNER/NAME:VERSION_ID
        version: String,
        #[command(flatten)]
        d: TrashableDeleteArgs,
    },
    /// Delete every version the rules let go but the newest ones; prints why each kept one
    /// stays.
    Prune {
        /// OWNER/NAME
        model: String,
        /// How many of the newest versions to keep.
        #[arg(long)]
        keep: u64,
        /// Only show what would go and what it would free; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct InputArgs {
    /// An input as key=value; the value is read as JSON when it is JSON, else as text.
    #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A URL to notify of the progress.
    #[arg(long)]
    pub webhook: Option<String>,
    /// The webhook events to send: start, output, logs, completed (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "webhook")]
    pub webhook_events: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum PredictionsCmd {
    /// Run a prediction.
    Create {
        /// OWNER/NAME:VERSION_ID, a bare version id, or OWNER/NAME for the latest version.
        version: String,
        #[command(flatten)]
        input: InputArgs,
        /// Wait for the result (sends `Prefer: wait`, then polls until it has finished).
        #[arg(long)]
        wait: bool,
    },
    /// Show a prediction.
    Get {
        id: String,
        /// Poll until it has finished.
        #[arg(long)]
        wait: bool,
    },
    /// List your predictions, newest first.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Cancel a prediction.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
pub enum TrainingsCmd {
    /// Fine-tune a version into a model of yours.
    Create {
        /// The base version, as OWNER/NAME:VERSION_ID.
        version: String,
        /// The model that receives the trained version, as OWNER/NAME.
        #[arg(long)]
        destination: String,
        #[command(flatten)]
        input: InputArgs,
        /// Poll until it has finished.
        #[arg(long)]
        wait: bool,
    },
    /// Show a training.
    Get {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// List your trainings, newest first.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Cancel a training.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
pub enum DeploymentsCmd {
    /// Create a deployment of your account.
    Create {
        /// The deployment's name (it belongs to the token's account).
        name: String,
        /// The model, as OWNER/NAME or OWNER/NAME:VERSION_ID.
        #[arg(long)]
        model: String,
        /// The version id (default: the one in --model, else the model's latest).
        #[arg(long)]
        version: Option<String>,
        #[arg(long, default_value = "cpu")]
        hardware: String,
        #[arg(long, default_value_t = 0)]
        min_instances: i64,
        #[arg(long, default_value_t = 1)]
        max_instances: i64,
    },
    /// Show a deployment.
    Get {
        /// OWNER/NAME
        deployment: String,
    },
    /// List the deployments of your accounts.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Change a deployment: makes a new release.
    Update {
        /// OWNER/NAME
        deployment: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        hardware: Option<String>,
        #[arg(long)]
        min_instances: Option<i64>,
        #[arg(long)]
        max_instances: Option<i64>,
    },
    /// Delete a deployment (it must be disabled, 0 and 0 instances, and unused for a while).
    Delete {
        /// OWNER/NAME
        deployment: String,
        #[command(flatten)]
        d: DeleteArgs,
    },
}

/// Why a command failed; printed once, on stderr.
#[derive(Debug)]
pub enum Failure {
    Client(modelyard_client::Error),
    Message(String),
}

impl From<modelyard_client::Error> for Failure {
    fn from(e: modelyard_client::Error) -> Self {
        Failure::Client(e)
    }
}

pub type Outcome = Result<ExitCode, Failure>;

/// An empty value (an empty environment variable, say) counts as not given.
pub fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

fn main() -> ExitCode {
    let cli = flags::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let has_token = non_empty(cli.token.clone()).is_some();
    let outcome = runtime.block_on(run(cli));
    match outcome {
        Ok(code) => code,
        Err(f) => {
            output::print_failure(&f, has_token);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Admin(args) => admin::run(args).await,
        command => {
            let url = non_empty(Some(cli.url)).unwrap_or_else(|| DEFAULT_URL.to_string());
            let client = modelyard_client::Client::new(&url, non_empty(cli.token));
            commands::run(&client, cli.json, command).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "modelyard",
            "models",
            "delete",
            "a/b",
            "--dry-run",
            "--json",
            "--url",
            "http://x",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.url, "http://x");
        let cli = Cli::try_parse_from([
            "modelyard",
            "admin",
            "user",
            "create",
            "alice",
            "--data-dir",
            "/tmp/d",
        ])
        .unwrap();
        match cli.command {
            Command::Admin(a) => assert_eq!(a.db.data_dir, PathBuf::from("/tmp/d")),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn server_help_leaves_out_the_client_options() {
        for path in [&["serve"][..], &["admin"], &["admin", "user", "create"]] {
            let mut cmd = flags::command();
            // Global options reach subcommands when the command is built, as when it parses.
            cmd.build();
            let mut sub = &mut cmd;
            for p in path {
                sub = sub.find_subcommand_mut(p).unwrap();
            }
            let help = sub.render_long_help().to_string();
            for opt in ["--url", "--token", "--json"] {
                assert!(!help.contains(opt), "{path:?} help lists {opt}:\n{help}");
            }
        }
        let mut cmd = flags::command();
        cmd.build();
        let help = cmd
            .find_subcommand_mut("models")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--url") && help.contains("--token") && help.contains("--json"));
        // Still parsed (and ignored) where hidden, so existing scripts keep working.
        let m = flags::command()
            .try_get_matches_from(["modelyard", "serve", "--json", "--addr", "127.0.0.1:9"])
            .unwrap();
        match Cli::from_arg_matches(&m).unwrap().command {
            Command::Serve(a) => assert_eq!(a.addr.port(), 9),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn trash_and_prune_commands() {
        let cli = Cli::try_parse_from([
            "modelyard",
            "versions",
            "prune",
            "a/b",
            "--keep",
            "3",
            "--dry-run",
        ])
        .unwrap();
        match cli.command {
            Command::Versions(VersionsCmd::Prune {
                model,
                keep,
                dry_run,
            }) => {
                assert_eq!((model.as_str(), keep, dry_run), ("a/b", 3, true));
            }
            c => panic!("{c:?}"),
        }
        let cli = Cli::try_parse_from(["modelyard", "trash", "restore", "a/b:v1"]).unwrap();
        assert!(
            matches!(cli.command, Command::Trash(TrashCmd::Restore { item }) if item == "a/b:v1")
        );
        let cli = Cli::try_parse_from(["modelyard", "models", "delete", "a/b", "--purge"]).unwrap();
        assert!(matches!(cli.command, Command::Models(ModelsCmd::Delete { d, .. }) if d.purge));
        // A preview of a purge is a preview: say which one is meant.
        assert!(Cli::try_parse_from([
            "modelyard",
            "models",
            "delete",
            "a/b",
            "--purge",
            "--dry-run"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["modelyard", "versions", "prune", "a/b"]).is_err(),
            "--keep is required"
        );
    }

    #[test]
    fn repeated_inputs() {
        let cli = Cli::try_parse_from([
            "modelyard",
            "predictions",
            "create",
            "a/b",
            "-i",
            "x=1",
            "-i",
            "y=two",
            "--wait",
        ])
        .unwrap();
        match cli.command {
            Command::Predictions(PredictionsCmd::Create { input, wait, .. }) => {
                assert_eq!(input.inputs, ["x=1", "y=two"]);
                assert!(wait);
            }
            c => panic!("{c:?}"),
        }
    }
}
