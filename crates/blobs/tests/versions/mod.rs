//! Versions recorded and deleted straight in the store, for the tests of what the data
//! directory and the object store keep: content is released only once no version uses it.
use modelyard_domain::{Caller, NewVersion};
use modelyard_storage::prelude::*;
use modelyard_storage::SqlStore;

/// Records a version of `model_id` using `artifact` (and `weights`); its id.
pub async fn record(
    store: &SqlStore,
    model_id: i64,
    artifact: &str,
    weights: Option<&str>,
) -> String {
    store
        .create_version(NewVersion {
            model_id,
            content_digest: format!("{artifact}:{weights:?}"),
            cog_version: "0.9.4".into(),
            openapi_schema: serde_json::json!({}),
            artifact: artifact.into(),
            base_version_id: None,
            training_id: None,
            weights: weights.map(str::to_string),
            gpu: false,
        })
        .await
        .unwrap()
        .version
        .id
}

/// Deletes a version as its owner alice, for good.
pub async fn delete(store: &SqlStore, model_id: i64, version_id: &str) {
    let caller = Caller {
        account: store.account("alice").await.unwrap().unwrap(),
        org_ids: vec![],
    };
    let d = store
        .delete_version(model_id, version_id, &caller, false)
        .await
        .unwrap();
    assert!(d.deleted);
}
