//! The client commands, against a running server.
use std::process::ExitCode;
use std::time::Duration;

use modelyard_client::{
    Client, DeletionPreview, DeploymentUpdate, ModelUpdate, NewDeployment, NewModel, NewPrediction,
    NewTraining, Page, PruneRequest, Wait,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::input::{self, Item, Target};
use crate::output;
use crate::{
    Command, DeploymentsCmd, Failure, InputArgs, ModelFields, ModelsCmd, Outcome, PredictionsCmd,
    TrainingsCmd, TrashCmd, VersionsCmd,
};

const POLL: Duration = Duration::from_millis(500);

fn arg<T>(r: Result<T, String>) -> Result<T, Failure> {
    r.map_err(Failure::Message)
}

pub async fn run(c: &Client, json: bool, command: Command) -> Outcome {
    match command {
        Command::Account => {
            let a = c.account().await?;
            show(json, &a, output::account);
        }
        Command::Hardware => {
            let hw = c.hardware().await?;
            show(json, &hw, |h| output::hardware(h));
        }
        Command::Models(cmd) => return models(c, json, cmd).await,
        Command::Versions(cmd) => return versions(c, json, cmd).await,
        Command::Push { model, dir } => {
            let (owner, name) = arg(input::model(&model))?;
            let (v, created) = crate::push::push(c, owner, name, &dir, json).await?;
            if json {
                output::json(&v);
            } else {
                if created {
                    println!("Created version {} of {owner}/{name}.", v.id);
                } else {
                    println!(
                        "{owner}/{name} already has this content as version {}.",
                        v.id
                    );
                }
                println!("{}", v.id);
            }
        }
        Command::Predictions(cmd) => return predictions(c, json, cmd).await,
        Command::Trainings(cmd) => return trainings(c, json, cmd).await,
        Command::Deployments(cmd) => return deployments(c, json, cmd).await,
        Command::Trash(cmd) => return trash(c, json, cmd).await,
        Command::Storage => {
            let st = c.storage().await?;
            show(json, &st, output::storage);
        }
        Command::Audit { all } => {
            let page = c.audit_log().await?;
            list(c, json, all, page, output::audit_event).await?;
        }
        Command::Serve(_) | Command::Admin(_) => unreachable!("handled before"),
    }
    Ok(ExitCode::SUCCESS)
}

fn show<T: Serialize + ?Sized>(json: bool, v: &T, readable: impl FnOnce(&T)) {
    if json {
        output::json(v);
    } else {
        readable(v);
    }
}

/// Prints a list: the first page, or with `all` every page. With `--json`, the page as the
/// server sent it, or with `all` the array of every result.
async fn list<T>(
    c: &Client,
    json: bool,
    all: bool,
    page: Page<T>,
    line: impl Fn(&T),
) -> Result<(), Failure>
where
    T: Serialize + serde::de::DeserializeOwned,
{
    if all {
        let items = c.all(page).await?;
        if json {
            output::json(&items);
        } else if items.is_empty() {
            println!("(none)");
        } else {
            items.iter().for_each(line);
        }
    } else if json {
        output::json(&page);
    } else if page.results.is_empty() && page.next.is_none() {
        println!("(none)");
    } else {
        page.results.iter().for_each(&line);
        output::more_hint(&page.next);
    }
    Ok(())
}

/// `--dry-run`: whether the deletion would go through and everything in the way; exit 0 if it
/// would, 1 if not.
fn preview(json: bool, what: &str, p: &DeletionPreview) -> ExitCode {
    if json {
        output::json(p);
    } else if p.deletable {
        println!("{what} can be deleted.");
    } else {
        let n = p.blockers.len();
        println!(
            "{what} cannot be deleted: {n} thing{} stand{} in the way.",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" }
        );
        output::blockers(&p.blockers, false);
    }
    if let (false, Some(n)) = (json, p.frees_bytes) {
        println!(
            "Deleting it frees {} ({n} bytes) once it is purged from the trash.",
            output::bytes(n)
        );
    }
    if p.deletable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `restore` names what brings it back while it is in the trash; `None` for a purge.
fn deleted(json: bool, what: &str, restore: Option<&str>) -> ExitCode {
    if json {
        output::json(&json!({"deleted": true, "purged": restore.is_none()}));
    } else if let Some(item) = restore {
        println!(
            "Deleted {what}. If the server keeps a trash, it is there for a while: \
             `modelyard trash restore {item}` brings it back."
        );
    } else {
        println!("Deleted {what} for good.");
    }
    ExitCode::SUCCESS
}

/// `Some("")` clears a field (`null`); `Some(text)` sets it.
fn clearable(v: Option<String>) -> Option<Option<String>> {
    v.map(|s| if s.is_empty() { None } else { Some(s) })
}

async fn models(c: &Client, json: bool, cmd: ModelsCmd) -> Outcome {
    match cmd {
        ModelsCmd::Create {
            model,
            visibility,
            hardware,
            fields,
        } => {
            let (owner, name) = arg(input::model(&model))?;
            let ModelFields {
                description,
                github_url,
                paper_url,
                license_url,
                cover_image_url,
            } = fields;
            let m = NewModel {
                description,
                github_url,
                paper_url,
                license_url,
                cover_image_url,
                ..NewModel::new(owner, name, &visibility, &hardware)
            };
            let m = c.models().create(&m).await?;
            show(json, &m, |m| {
                println!("Created {}.", m.full_name());
                output::model(m);
            });
        }
        ModelsCmd::Get { model } => {
            let (owner, name) = arg(input::model(&model))?;
            show(json, &c.models().get(owner, name).await?, output::model);
        }
        ModelsCmd::List { all } => {
            let page = c.models().list().await?;
            list(c, json, all, page, output::model_line).await?;
        }
        ModelsCmd::Search { query, all } => {
            let page = c.models().search(&query).await?;
            list(c, json, all, page, output::model_line).await?;
        }
        ModelsCmd::Update {
            model,
            visibility,
            hardware,
            fields,
        } => {
            let (owner, name) = arg(input::model(&model))?;
            let u = ModelUpdate {
                visibility,
                hardware,
                description: clearable(fields.description),
                github_url: clearable(fields.github_url),
                paper_url: clearable(fields.paper_url),
                license_url: clearable(fields.license_url),
                cover_image_url: clearable(fields.cover_image_url),
            };
            if u == ModelUpdate::default() {
                return Err(Failure::Message(
                    "nothing to change: give at least one of --visibility, --hardware, --description, --github-url, --paper-url, --license-url, --cover-image-url".into(),
                ));
            }
            let m = c.models().update(owner, name, &u).await?;
            show(json, &m, |m| {
                println!("Updated {}.", m.full_name());
                output::model(m);
            });
        }
        ModelsCmd::Delete { model, d } => {
            let (owner, name) = arg(input::model(&model))?;
            let what = format!("{owner}/{name}");
            if d.dry_run {
                return Ok(preview(
                    json,
                    &what,
                    &c.models().delete_preview(owner, name).await?,
                ));
            }
            if d.purge {
                c.models().purge(owner, name).await?;
                return Ok(deleted(json, &what, None));
            }
            c.models().delete(owner, name).await?;
            return Ok(deleted(json, &what, Some(&what)));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn versions(c: &Client, json: bool, cmd: VersionsCmd) -> Outcome {
    match cmd {
        VersionsCmd::List { model, all } => {
            let (owner, name) = arg(input::model(&model))?;
            let page = c.versions().list(owner, name).await?;
            list(c, json, all, page, output::version_line).await?;
        }
        VersionsCmd::Get { version } => {
            let (owner, name, id) = arg(input::version(&version))?;
            let v = c.versions().get(owner, name, id).await?;
            show(json, &v, |v| output::version(&format!("{owner}/{name}"), v));
        }
        VersionsCmd::Delete { version, d } => {
            let (owner, name, id) = arg(input::version(&version))?;
            let what = format!("the version {owner}/{name}:{id}");
            if d.dry_run {
                let p = c.versions().delete_preview(owner, name, id).await?;
                return Ok(preview(json, &capitalized(&what), &p));
            }
            if d.purge {
                c.versions().purge(owner, name, id).await?;
                return Ok(deleted(json, &what, None));
            }
            c.versions().delete(owner, name, id).await?;
            return Ok(deleted(json, &what, Some(&version)));
        }
        VersionsCmd::Prune {
            model,
            keep,
            dry_run,
        } => {
            let (owner, name) = arg(input::model(&model))?;
            let p = c
                .versions()
                .prune(owner, name, &PruneRequest { keep, dry_run })
                .await?;
            show(json, &p, |p| {
                output::prune_lines(p, dry_run)
                    .iter()
                    .for_each(|l| println!("{l}"))
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn trash(c: &Client, json: bool, cmd: TrashCmd) -> Outcome {
    match cmd {
        TrashCmd::List { owner } => {
            let page = c.trash(owner.as_deref()).await?;
            let now = chrono::Utc::now();
            list(c, json, false, page, |t| {
                println!("{}", output::trash_line(t, now))
            })
            .await?;
        }
        TrashCmd::Restore { item } => match arg(input::item(&item))? {
            Item::Model(owner, name) => {
                let m = c.models().restore(owner, name).await?;
                show(json, &m, |m| {
                    println!(
                        "Restored {}. Its versions stay in the trash: restore each with \
                         `modelyard trash restore {}:VERSION_ID`.",
                        m.full_name(),
                        m.full_name()
                    )
                });
            }
            Item::Version(owner, name, id) => {
                let v = c.versions().restore(owner, name, id).await?;
                show(json, &v, |v| {
                    println!("Restored the version {owner}/{name}:{}.", v.id)
                });
            }
        },
        TrashCmd::Purge { item } => match arg(input::item(&item))? {
            Item::Model(owner, name) => {
                c.models().purge(owner, name).await?;
                return Ok(deleted(json, &format!("{owner}/{name}"), None));
            }
            Item::Version(owner, name, id) => {
                c.versions().purge(owner, name, id).await?;
                return Ok(deleted(
                    json,
                    &format!("the version {owner}/{name}:{id}"),
                    None,
                ));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(f) => f.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn events(input: &InputArgs) -> Option<Vec<String>> {
    (!input.webhook_events.is_empty()).then(|| input.webhook_events.clone())
}

async fn predictions(c: &Client, json: bool, cmd: PredictionsCmd) -> Outcome {
    let p = c.predictions();
    match cmd {
        PredictionsCmd::Create {
            version,
            input,
            wait,
        } => {
            let target = arg(input::target(&version))?;
            let mut req =
                NewPrediction::new(Value::Object(arg(input::parse_inputs(&input.inputs))?));
            req.webhook = input.webhook.clone();
            req.webhook_events_filter = events(&input);
            if wait {
                req.wait = Wait::Yes;
            }
            let mut pred = match target {
                Target::Version(v) => p.create(v, &req).await?,
                Target::Model(owner, name) => p.create_for_model(owner, name, &req).await?,
            };
            if wait && !pred.is_terminal() {
                pred = p.wait(&pred.id, POLL).await?;
            }
            show(json, &pred, |x| output::job("Prediction", x));
        }
        PredictionsCmd::Get { id, wait } => {
            let pred = if wait {
                p.wait(&id, POLL).await?
            } else {
                p.get(&id).await?
            };
            show(json, &pred, |x| output::job("Prediction", x));
        }
        PredictionsCmd::List { all } => {
            let page = p.list().await?;
            list(c, json, all, page, output::job_line).await?;
        }
        PredictionsCmd::Cancel { id } => {
            show(json, &p.cancel(&id).await?, |x| {
                output::job("Prediction", x)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn trainings(c: &Client, json: bool, cmd: TrainingsCmd) -> Outcome {
    let t = c.trainings();
    match cmd {
        TrainingsCmd::Create {
            version,
            destination,
            input,
            wait,
        } => {
            let (owner, name, id) = arg(input::version(&version))?;
            arg(input::model(&destination))?;
            let req = NewTraining {
                destination: destination.clone(),
                input: Value::Object(arg(input::parse_inputs(&input.inputs))?),
                webhook: input.webhook.clone(),
                webhook_events_filter: events(&input),
            };
            let mut tr = t.create_with(owner, name, id, &req).await?;
            if wait && !tr.is_terminal() {
                tr = t.wait(&tr.id, POLL).await?;
            }
            show(json, &tr, |x| output::job("Training", x));
        }
        TrainingsCmd::Get { id, wait } => {
            let tr = if wait {
                t.wait(&id, POLL).await?
            } else {
                t.get(&id).await?
            };
            show(json, &tr, |x| output::job("Training", x));
        }
        TrainingsCmd::List { all } => {
            let page = t.list().await?;
            list(c, json, all, page, output::job_line).await?;
        }
        TrainingsCmd::Cancel { id } => {
            show(json, &t.cancel(&id).await?, |x| output::job("Training", x));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn deployments(c: &Client, json: bool, cmd: DeploymentsCmd) -> Outcome {
    let d = c.deployments();
    match cmd {
        DeploymentsCmd::Create {
            name,
            model,
            version,
            hardware,
            min_instances,
            max_instances,
        } => {
            if name.contains('/') {
                return Err(Failure::Message(format!(
                    "give the deployment's name without an owner ({:?}): a deployment belongs to the token's account",
                    name.rsplit('/').next().unwrap_or(&name)
                )));
            }
            let (model, in_model) = match model.split_once(':') {
                Some((m, v)) => (m.to_string(), Some(v.to_string())),
                None => (model.clone(), None),
            };
            let (owner, mname) = arg(input::model(&model))?;
            let version = match (version, in_model) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Failure::Message(format!(
                        "--version {a} and the version in --model ({b}) differ"
                    )))
                }
                (Some(v), _) | (None, Some(v)) => v,
                (None, None) => match c.models().get(owner, mname).await?.latest_version {
                    Some(v) => v.id,
                    None => {
                        return Err(Failure::Message(format!(
                            "{model} has no versions yet: push one first"
                        )))
                    }
                },
            };
            let req = NewDeployment {
                name,
                model: model.clone(),
                version,
                hardware,
                min_instances,
                max_instances,
            };
            let dep = d.create(&req).await?;
            show(json, &dep, |x| {
                println!("Created deployment {}.", x.full_name());
                output::deployment(x);
            });
        }
        DeploymentsCmd::Get { deployment } => {
            let (owner, name) = arg(input::deployment(&deployment))?;
            show(json, &d.get(owner, name).await?, output::deployment);
        }
        DeploymentsCmd::List { all } => {
            let page = d.list().await?;
            list(c, json, all, page, output::deployment_line).await?;
        }
        DeploymentsCmd::Update {
            deployment,
            version,
            hardware,
            min_instances,
            max_instances,
        } => {
            let (owner, name) = arg(input::deployment(&deployment))?;
            let u = DeploymentUpdate {
                version,
                hardware,
                min_instances,
                max_instances,
            };
            if u.is_empty() {
                return Err(Failure::Message(
                    "nothing to change: give at least one of --version, --hardware, --min-instances, --max-instances".into(),
                ));
            }
            let dep = d.update(owner, name, &u).await?;
            show(json, &dep, |x| {
                println!(
                    "Updated {}: release {}.",
                    x.full_name(),
                    x.current_release.number
                );
                output::deployment(x);
            });
        }
        DeploymentsCmd::Delete { deployment, d: del } => {
            let (owner, name) = arg(input::deployment(&deployment))?;
            let what = format!("the deployment {owner}/{name}");
            if del.dry_run {
                let p = d.delete_preview(owner, name).await?;
                return Ok(preview(json, &capitalized(&what), &p));
            }
            d.delete(owner, name).await?;
            return Ok(deleted(json, &what, None));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_and_sizes() {
        assert_eq!(clearable(Some(String::new())), Some(None));
        assert_eq!(clearable(Some("x".into())), Some(Some("x".into())));
        assert_eq!(clearable(None), None);
        assert_eq!(crate::push::size(100), "100 bytes");
        assert_eq!(crate::push::size(20 * 1024), "20 KiB");
        assert_eq!(capitalized("the x"), "The x");
    }
}
