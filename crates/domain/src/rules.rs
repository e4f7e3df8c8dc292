//! The deletion rules (and restoring from and purging the trash), and the one rule on
//! memberships. Each is a plain function of facts that returns *every* blocker, so a refused
//! person learns all that stands in the way at once.
//! Storage gathers the facts and calls these inside the transaction that acts, so a concurrent
//! request cannot slip between.
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::{Status, Visibility};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockerKind {
    Public,
    HasVersions,
    PredictionsByOthers,
    FineTuneBase,
    Deployment,
    DeploymentEnabled,
    DeploymentRecentlyUsed,
    /// Removing the member would leave its organization with none. Only the web's account page
    /// removes members, so no API answer carries this kind.
    LastMember,
    /// A version of a model in the trash: the model comes back first.
    ModelInTrash,
}

/// Something that blocks a deletion, with a sentence a person can act on and the names involved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub kind: BlockerKind,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

impl Blocker {
    fn new(kind: BlockerKind, detail: String) -> Self {
        Blocker {
            kind,
            detail,
            model: None,
            version_count: None,
            versions: None,
            account: None,
            prediction_count: None,
            training: None,
            version: None,
            deployment: None,
        }
    }
}

/// How many version ids a `has_versions` blocker names; the count is always exact.
pub const VERSIONS_NAMED: usize = 20;

pub struct ModelFacts {
    /// "owner/name"
    pub model: String,
    pub visibility: Visibility,
    pub version_count: i64,
    /// The newest versions, at most [`VERSIONS_NAMED`].
    pub newest_versions: Vec<String>,
}

pub fn model_deletion_blockers(f: &ModelFacts) -> Vec<Blocker> {
    let mut out = Vec::new();
    if f.visibility == Visibility::Public {
        let mut b = Blocker::new(
            BlockerKind::Public,
            format!(
                "{} is public. Make it private first (PATCH the model with \"visibility\": \"private\", or use its Settings page).",
                f.model
            ),
        );
        b.model = Some(f.model.clone());
        out.push(b);
    }
    if f.version_count > 0 {
        let mut b = Blocker::new(
            BlockerKind::HasVersions,
            format!(
                "{} still has {} version{}. Delete every version first.",
                f.model,
                f.version_count,
                if f.version_count == 1 { "" } else { "s" }
            ),
        );
        b.model = Some(f.model.clone());
        b.version_count = Some(f.version_count);
        b.versions = Some(f.newest_versions.clone());
        out.push(b);
    }
    out
}

pub struct RunsBy {
    pub account_id: i64,
    pub account: String,
    pub count: i64,
}

/// A use of the version as a fine-tune base: a training from it, or a version trained from it.
pub struct FineTuneUse {
    pub training_id: Option<String>,
    pub training_status: Option<Status>,
    /// "owner/name:id" of the version the training produced, if any.
    pub derived_version: Option<String>,
    /// The derived version is in the trash. It still blocks: restored, it would need its base.
    pub derived_in_trash: bool,
}

pub struct VersionFacts {
    pub model: String,
    pub version_id: String,
    pub visibility: Visibility,
    pub runs: Vec<RunsBy>,
    pub fine_tunes: Vec<FineTuneUse>,
    /// "owner/name" of every deployment whose current release uses the version.
    pub deployments: Vec<String>,
}

pub fn version_deletion_blockers(f: &VersionFacts, caller_id: i64) -> Vec<Blocker> {
    let mut out = Vec::new();
    let short = &f.version_id[..f.version_id.len().min(12)];
    if f.visibility == Visibility::Public {
        let mut b = Blocker::new(
            BlockerKind::Public,
            format!(
                "{} is public, and versions of public models cannot be deleted. Make the model private first.",
                f.model
            ),
        );
        b.model = Some(f.model.clone());
        out.push(b);
    }
    for r in f
        .runs
        .iter()
        .filter(|r| r.account_id != caller_id && r.count > 0)
    {
        let mut b = Blocker::new(
            BlockerKind::PredictionsByOthers,
            format!(
                "{} has run {} prediction{} with version {short}. A version other people have used cannot be deleted; push a new version for your changes instead.",
                r.account,
                r.count,
                if r.count == 1 { "" } else { "s" }
            ),
        );
        b.account = Some(r.account.clone());
        b.prediction_count = Some(r.count);
        out.push(b);
    }
    for ft in &f.fine_tunes {
        // A finished training blocks through the version it produced, for as long as that
        // version exists; one still running blocks by itself.
        let live_training = ft
            .training_status
            .is_some_and(|s| matches!(s, Status::Starting | Status::Processing));
        if !live_training && ft.derived_version.is_none() {
            continue;
        }
        let detail = match (&ft.derived_version, &ft.training_id) {
            (Some(v), _) if ft.derived_in_trash => format!(
                "Version {short} is the base of the fine-tuned version {v}, which is in the trash. Purge that version first."
            ),
            (Some(v), _) => format!(
                "Version {short} is the base of the fine-tuned version {v}. Delete that version first."
            ),
            (None, Some(t)) => format!(
                "Training {t} is fine-tuning from version {short}. Cancel it, or wait for it to finish and delete the version it makes."
            ),
            (None, None) => continue,
        };
        let mut b = Blocker::new(BlockerKind::FineTuneBase, detail);
        b.training = ft.training_id.clone();
        b.version = ft.derived_version.clone();
        out.push(b);
    }
    for d in &f.deployments {
        let mut b = Blocker::new(
            BlockerKind::Deployment,
            format!(
                "The deployment {d} runs version {short}. Point it at another version, or disable and delete the deployment."
            ),
        );
        b.deployment = Some(d.clone());
        out.push(b);
    }
    out
}

/// What a restore from the trash needs to know.
pub struct RestoreFacts {
    /// "owner/name", or "owner/name:id" for a version.
    pub item: String,
    /// For a version: its model is in the trash too.
    pub model_in_trash: bool,
}

/// A model comes back from the trash as it went (its name was kept for it); a version only
/// once its model is back. Who may restore is [`can_manage`]: for anyone else the trash item
/// does not exist.
pub fn restore_blockers(f: &RestoreFacts) -> Vec<Blocker> {
    let mut out = Vec::new();
    if f.model_in_trash {
        let model = f.item.split_once(':').map_or(f.item.as_str(), |(m, _)| m);
        let mut b = Blocker::new(
            BlockerKind::ModelInTrash,
            format!(
                "The model {model} is in the trash. Restore the model first, then {}.",
                f.item
            ),
        );
        b.model = Some(model.to_string());
        out.push(b);
    }
    out
}

/// What purging (final deletion of what is in the trash) needs to know.
pub struct PurgeFacts {
    /// "owner/name", or "owner/name:id" for a version.
    pub item: String,
    /// Fine-tuned versions ("owner/name:id") made from a version being purged that are not
    /// purged with it. Nothing can point to a trashed version, so this is the backstop's
    /// sentence rather than a case anyone meets.
    pub derived_versions: Vec<String>,
}

/// Purging a trashed item: every blocker. Who may purge is [`can_manage`] (or the expiry
/// sweep); the trash itself was entered under the deletion rules.
pub fn purge_blockers(f: &PurgeFacts) -> Vec<Blocker> {
    f.derived_versions
        .iter()
        .map(|v| {
            let mut b = Blocker::new(
                BlockerKind::FineTuneBase,
                format!(
                    "{} is the base of the fine-tuned version {v}. Delete that version first.",
                    f.item
                ),
            );
            b.version = Some(v.clone());
            b
        })
        .collect()
}

pub struct DeploymentFacts {
    pub deployment: String,
    pub min_instances: i64,
    pub max_instances: i64,
    pub last_used_at: DateTime<Utc>,
}

/// A deployment can go once it is disabled (0 and 0 instances) and has been unused for `idle`.
pub fn deployment_deletion_blockers(
    f: &DeploymentFacts,
    now: DateTime<Utc>,
    idle: Duration,
) -> Vec<Blocker> {
    let mut out = Vec::new();
    if f.min_instances != 0 || f.max_instances != 0 {
        let mut b = Blocker::new(
            BlockerKind::DeploymentEnabled,
            format!(
                "The deployment {} is enabled. Set min_instances and max_instances to 0 first.",
                f.deployment
            ),
        );
        b.deployment = Some(f.deployment.clone());
        out.push(b);
    }
    let ready_at = f.last_used_at + idle;
    if now < ready_at {
        let wait = (ready_at - now).num_seconds().max(1);
        let mut b = Blocker::new(
            BlockerKind::DeploymentRecentlyUsed,
            format!(
                "The deployment {} was used or changed less than {} minutes ago. Try again in {wait} seconds.",
                f.deployment,
                idle.num_minutes()
            ),
        );
        b.deployment = Some(f.deployment.clone());
        out.push(b);
    }
    out
}

pub struct MembershipFacts {
    pub organization: String,
    /// The username of the member to remove.
    pub member: String,
    /// How many members the organization has now, the one to remove included.
    pub member_count: i64,
}

/// An organization keeps at least one member: nobody could act for it (or add anyone) otherwise.
pub fn member_removal_blockers(f: &MembershipFacts) -> Vec<Blocker> {
    let mut out = Vec::new();
    if f.member_count <= 1 {
        let mut b = Blocker::new(
            BlockerKind::LastMember,
            format!(
                "{} is the last member of {}; an organization needs at least one.",
                f.member, f.organization
            ),
        );
        b.account = Some(f.member.clone());
        out.push(b);
    }
    out
}

/// Who may see a model and everything in it: anyone when it is public, otherwise only the
/// owning account and members of the owning organization. Outsiders get the same 404 as for
/// something that does not exist.
pub fn can_view(caller: Option<&crate::Caller>, owner_id: i64, visibility: Visibility) -> bool {
    visibility == Visibility::Public || caller.is_some_and(|c| c.acts_for(owner_id))
}

/// Who may change or delete a model, its versions and deployments: its owners.
pub fn can_manage(caller: &crate::Caller, owner_id: i64) -> bool {
    caller.acts_for(owner_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vfacts() -> VersionFacts {
        VersionFacts {
            model: "alice/m".into(),
            version_id: "a".repeat(64),
            visibility: Visibility::Private,
            runs: vec![],
            fine_tunes: vec![],
            deployments: vec![],
        }
    }

    fn kinds(b: &[Blocker]) -> Vec<BlockerKind> {
        b.iter().map(|b| b.kind).collect()
    }

    #[test]
    fn model_rules_report_every_blocker() {
        let mut f = ModelFacts {
            model: "alice/m".into(),
            visibility: Visibility::Private,
            version_count: 0,
            newest_versions: vec![],
        };
        assert!(model_deletion_blockers(&f).is_empty());
        f.visibility = Visibility::Public;
        f.version_count = 2;
        f.newest_versions = vec!["x".into(), "y".into()];
        let b = model_deletion_blockers(&f);
        assert_eq!(kinds(&b), [BlockerKind::Public, BlockerKind::HasVersions]);
        assert_eq!(b[1].version_count, Some(2));
        assert!(b[1].detail.contains("2 versions"));
    }

    #[test]
    fn own_predictions_do_not_block_but_others_do() {
        let mut f = vfacts();
        f.runs = vec![RunsBy {
            account_id: 1,
            account: "alice".into(),
            count: 5,
        }];
        assert!(version_deletion_blockers(&f, 1).is_empty());
        f.runs.push(RunsBy {
            account_id: 2,
            account: "bob".into(),
            count: 1,
        });
        let b = version_deletion_blockers(&f, 1);
        assert_eq!(kinds(&b), [BlockerKind::PredictionsByOthers]);
        assert_eq!(b[0].account.as_deref(), Some("bob"));
        // Seen from bob's side, alice's runs block.
        assert_eq!(
            version_deletion_blockers(&f, 2)[0].account.as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn failed_and_canceled_trainings_do_not_block() {
        let mut f = vfacts();
        for s in [Status::Failed, Status::Canceled, Status::Succeeded] {
            f.fine_tunes = vec![FineTuneUse {
                training_id: Some("t".into()),
                training_status: Some(s),
                derived_version: None,
                derived_in_trash: false,
            }];
            assert!(version_deletion_blockers(&f, 1).is_empty());
        }
        for s in [Status::Starting, Status::Processing] {
            f.fine_tunes[0].training_status = Some(s);
            assert_eq!(
                kinds(&version_deletion_blockers(&f, 1)),
                [BlockerKind::FineTuneBase]
            );
        }
        f.fine_tunes = vec![FineTuneUse {
            training_id: None,
            training_status: None,
            derived_version: Some("alice/ft:b".into()),
            derived_in_trash: false,
        }];
        let b = version_deletion_blockers(&f, 1);
        assert_eq!(b[0].version.as_deref(), Some("alice/ft:b"));
        // A fine-tune in the trash still needs its base: it could be restored.
        f.fine_tunes[0].derived_in_trash = true;
        let b = version_deletion_blockers(&f, 1);
        assert_eq!(kinds(&b), [BlockerKind::FineTuneBase]);
        assert!(b[0].detail.contains("in the trash"), "{}", b[0].detail);
    }

    #[test]
    fn all_version_blockers_at_once() {
        let mut f = vfacts();
        f.visibility = Visibility::Public;
        f.runs = vec![RunsBy {
            account_id: 2,
            account: "bob".into(),
            count: 3,
        }];
        f.fine_tunes = vec![FineTuneUse {
            training_id: Some("t1".into()),
            training_status: Some(Status::Processing),
            derived_version: None,
            derived_in_trash: false,
        }];
        f.deployments = vec!["alice/prod".into(), "acme/staging".into()];
        let b = version_deletion_blockers(&f, 1);
        assert_eq!(
            kinds(&b),
            [
                BlockerKind::Public,
                BlockerKind::PredictionsByOthers,
                BlockerKind::FineTuneBase,
                BlockerKind::Deployment,
                BlockerKind::Deployment
            ]
        );
        assert_eq!(b[4].deployment.as_deref(), Some("acme/staging"));
    }

    #[test]
    fn an_organization_keeps_its_last_member() {
        let mut f = MembershipFacts {
            organization: "acme".into(),
            member: "bob".into(),
            member_count: 2,
        };
        assert!(member_removal_blockers(&f).is_empty());
        f.member_count = 1;
        let b = member_removal_blockers(&f);
        assert_eq!(kinds(&b), [BlockerKind::LastMember]);
        assert_eq!(b[0].account.as_deref(), Some("bob"));
        assert_eq!(
            b[0].detail,
            "bob is the last member of acme; an organization needs at least one."
        );
    }

    #[test]
    fn a_version_comes_back_only_after_its_model() {
        let mut f = RestoreFacts {
            item: "alice/m:abc".into(),
            model_in_trash: false,
        };
        assert!(restore_blockers(&f).is_empty());
        f.model_in_trash = true;
        let b = restore_blockers(&f);
        assert_eq!(kinds(&b), [BlockerKind::ModelInTrash]);
        assert_eq!(b[0].model.as_deref(), Some("alice/m"));
        assert_eq!(
            b[0].detail,
            "The model alice/m is in the trash. Restore the model first, then alice/m:abc."
        );
        // A model itself always comes back: its name was kept for it.
        let m = RestoreFacts {
            item: "alice/m".into(),
            model_in_trash: false,
        };
        assert!(restore_blockers(&m).is_empty());
    }

    #[test]
    fn purge_names_every_fine_tune_left_behind() {
        let mut f = PurgeFacts {
            item: "alice/m".into(),
            derived_versions: vec![],
        };
        assert!(purge_blockers(&f).is_empty());
        f.derived_versions = vec!["bob/ft:1".into(), "bob/ft:2".into()];
        let b = purge_blockers(&f);
        assert_eq!(
            kinds(&b),
            [BlockerKind::FineTuneBase, BlockerKind::FineTuneBase]
        );
        assert_eq!(b[1].version.as_deref(), Some("bob/ft:2"));
    }

    #[test]
    fn deployments_go_once_disabled_and_idle() {
        let now = Utc::now();
        let mut f = DeploymentFacts {
            deployment: "alice/d".into(),
            min_instances: 0,
            max_instances: 1,
            last_used_at: now - Duration::minutes(20),
        };
        let idle = Duration::minutes(15);
        assert_eq!(
            kinds(&deployment_deletion_blockers(&f, now, idle)),
            [BlockerKind::DeploymentEnabled]
        );
        f.max_instances = 0;
        assert!(deployment_deletion_blockers(&f, now, idle).is_empty());
        f.last_used_at = now - Duration::minutes(5);
        assert_eq!(
            kinds(&deployment_deletion_blockers(&f, now, idle)),
            [BlockerKind::DeploymentRecentlyUsed]
        );
    }
}
