//! `modelyard admin`: accounts and tokens, straight in the database.
use std::process::ExitCode;

use modelyard_domain::ids::{new_token, token_hash};
use modelyard_domain::names::validate_account_name;
use modelyard_domain::{Account, AccountKind};
use modelyard_storage::prelude::*;
use modelyard_storage::{SqlStore, StoreError};

use crate::{non_empty, AdminArgs, AdminCmd, DbArgs, Failure, OrgCmd, Outcome, TokenCmd, UserCmd};

/// The database URL the server would use, with the data directory made if it is missing.
pub fn database_url(db: &DbArgs) -> Result<String, Failure> {
    let config = modelyard_server::Config {
        data_dir: db.data_dir.clone(),
        database_url: non_empty(db.database_url.clone()),
        ..Default::default()
    };
    modelyard_server::prepare_data_dir(&config).map_err(|e| Failure::Message(e.to_string()))?;
    Ok(config.database_url())
}

fn store_err(e: StoreError) -> Failure {
    Failure::Message(match e {
        StoreError::Internal(m) => format!("the database failed: {m}"),
        e => e.to_string(),
    })
}

pub async fn run(args: AdminArgs) -> Outcome {
    let url = database_url(&args.db)?;
    let store = SqlStore::connect(&url).await.map_err(|e| {
        let e = match e {
            StoreError::Internal(m) => m,
            e => e.to_string(),
        };
        Failure::Message(format!("could not open the database: {e}"))
    })?;
    match args.command {
        AdminCmd::User(UserCmd::Create { name, display_name }) => {
            check_free(&store, "user", &name).await?;
            let shown = non_empty(display_name).unwrap_or_else(|| name.clone());
            let user = store
                .create_account(AccountKind::User, &name, &shown)
                .await
                .map_err(store_err)?;
            let token = add_token(&store, &user).await?;
            println!(
                "Created the user {}. Its API token (shown only once):",
                user.username
            );
            println!("{token}");
        }
        AdminCmd::User(UserCmd::SetPassword { name }) => {
            let u = user(&store, &name).await?;
            let password = read_password()?;
            let hash =
                tokio::task::spawn_blocking(move || modelyard_server::hash_password(&password))
                    .await
                    .map_err(|e| Failure::Message(e.to_string()))?
                    .map_err(Failure::Message)?;
            store
                .set_password_hash(u.id, Some(&hash))
                .await
                .map_err(store_err)?;
            println!(
                "Set the password of {}; it can sign in to the web UI now.",
                u.username
            );
        }
        AdminCmd::Org(OrgCmd::Create {
            name,
            members,
            display_name,
        }) => {
            check_free(&store, "organization", &name).await?;
            let mut users: Vec<Account> = Vec::new();
            for m in &members {
                let u = user(&store, m).await?;
                if !users.iter().any(|x| x.id == u.id) {
                    users.push(u);
                }
            }
            let shown = non_empty(display_name).unwrap_or_else(|| name.clone());
            let org = store
                .create_account(AccountKind::Organization, &name, &shown)
                .await
                .map_err(store_err)?;
            for u in &users {
                store.add_member(org.id, u.id).await.map_err(store_err)?;
            }
            let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
            println!(
                "Created the organization {} with {} {}.",
                org.username,
                if names.len() == 1 {
                    "member"
                } else {
                    "members"
                },
                names.join(", ")
            );
        }
        AdminCmd::Org(OrgCmd::AddMember { org, user: member }) => {
            let org = organization(&store, &org).await?;
            let u = user(&store, &member).await?;
            let already = store
                .members(org.id)
                .await
                .map_err(store_err)?
                .iter()
                .any(|m| m.id == u.id);
            if already {
                println!("{} is already a member of {}.", u.username, org.username);
            } else {
                store.add_member(org.id, u.id).await.map_err(store_err)?;
                println!("Added {} to {}.", u.username, org.username);
            }
        }
        AdminCmd::Token(TokenCmd::Create { account }) => {
            let a = store
                .account(&account)
                .await
                .map_err(store_err)?
                .ok_or_else(|| {
                    Failure::Message(format!(
                        "there is no user or organization named {account:?}"
                    ))
                })?;
            let token = add_token(&store, &a).await?;
            println!(
                "Created an API token for the {} {} (shown only once):",
                a.kind.as_str(),
                a.username
            );
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The name is valid and nobody has it.
async fn check_free(store: &SqlStore, what: &str, name: &str) -> Result<(), Failure> {
    validate_account_name(what, name).map_err(Failure::Message)?;
    if let Some(a) = store.account(name).await.map_err(store_err)? {
        return Err(Failure::Message(format!(
            "the name {name:?} is already taken by the {} {}",
            a.kind.as_str(),
            a.username
        )));
    }
    Ok(())
}

async fn user(store: &SqlStore, name: &str) -> Result<Account, Failure> {
    match store.account(name).await.map_err(store_err)? {
        Some(a) if a.kind == AccountKind::User => Ok(a),
        Some(a) => Err(Failure::Message(format!(
            "{} is an organization, and only users can be members of an organization",
            a.username
        ))),
        None => Err(Failure::Message(format!("there is no user named {name:?}"))),
    }
}

async fn organization(store: &SqlStore, name: &str) -> Result<Account, Failure> {
    match store.account(name).await.map_err(store_err)? {
        Some(a) if a.kind == AccountKind::Organization => Ok(a),
        Some(a) => Err(Failure::Message(format!(
            "{} is a user, not an organization",
            a.username
        ))),
        None => Err(Failure::Message(format!(
            "there is no organization named {name:?}"
        ))),
    }
}

async fn add_token(store: &SqlStore, a: &Account) -> Result<String, Failure> {
    let token = new_token();
    store
        .add_token(a.id, &token_hash(&token))
        .await
        .map_err(store_err)?;
    Ok(token)
}

/// The password: the first line of standard input, without its line ending.
fn read_password() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| {
        Failure::Message(format!(
            "could not read the password from standard input: {e}"
        ))
    })?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(Failure::Message(
            "give the password on standard input, e.g. `modelyard admin user set-password NAME < file`".into(),
        ));
    }
    Ok(password)
}
