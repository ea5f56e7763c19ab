//! The minted token sources of each service account, built once per snapshot from the
//! configuration and shared by every mount (`v1/`, `v1beta1/`).
//!
//! Contract: [`issuers`] gives one [`Issuers`] per account of the tree: an access-token issuer
//! when the account's `token` is `minted`, `upstream` or `command`, an ID-token issuer when its
//! `identity` is `minted`. A
//! `format=full` ID token's `google.compute_engine` claim is taken from the metadata tree
//! itself (`instance/id`, `name`, `zone`, `licenses`, `project/project-id`,
//! `numeric-project-id`), so the token and the metadata never disagree.

use std::sync::Arc;

use serde_json::Value;

use super::routes::Issuers;
use super::tree::Account;
use crate::config::gce::MintedIdToken;
use crate::config::gce::TokenSource as TokenSourceConfig;
use crate::config::GceConfig;
use crate::identity::gce::{
    derived_unique_id, ComputeEngine, MintedAccessToken, MintedIdToken as Source,
};
use crate::identity::upstream::command::CommandTokens;
use crate::identity::upstream::google::{Credentials, GoogleTokens, DEFAULT_IAM_CREDENTIALS};
use crate::identity::upstream::{Broken, FetchedTokens};
use crate::identity::{IdentityKeys, Issuer, TokenSource};

pub fn issuers(config: &GceConfig, accounts: &[Account], keys: &Arc<IdentityKeys>) -> Vec<Issuers> {
    accounts
        .iter()
        .map(|a| Issuers {
            token: a
                .minted_token
                .as_ref()
                .map(|m| -> Box<dyn TokenSource> {
                    Box::new(MintedAccessToken::new(
                        Arc::clone(keys),
                        &a.email,
                        &a.scopes,
                        m.lifetime(),
                    ))
                })
                .or_else(|| a.fetched_token.as_ref().map(|t| fetched_source(a, t)))
                .map(|source| Arc::new(Issuer::new(a.email.as_str(), "access token", source))),
            identity: a.minted_identity.as_ref().map(|m| {
                let unique_id = m
                    .unique_id
                    .clone()
                    .unwrap_or_else(|| derived_unique_id(&a.email));
                let source = Source::new(
                    Arc::clone(keys),
                    &a.email,
                    &unique_id,
                    compute_engine(config, m),
                );
                Arc::new(Issuer::new(a.email.as_str(), "ID token", Box::new(source)))
            }),
        })
        .collect()
}

/// An `upstream` (Google credentials file) or `command` access-token source.
fn fetched_source(a: &Account, t: &TokenSourceConfig) -> Box<dyn TokenSource> {
    if let Some(c) = &t.command {
        return Box::new(FetchedTokens::new(Box::new(CommandTokens(c.command()))));
    }
    let Some(u) = &t.upstream else {
        return Box::new(Broken::new("no token source"));
    };
    let credentials = std::fs::read_to_string(&u.credentials_file)
        .map_err(|e| e.to_string())
        .and_then(|text| Credentials::parse(&text))
        .map_err(|e| format!("{}: {e}", u.credentials_file.display()));
    match credentials {
        Ok(c) => Box::new(FetchedTokens::new(Box::new(GoogleTokens::new(
            c,
            u.impersonate.clone(),
            u.iam_credentials_url
                .as_deref()
                .unwrap_or(DEFAULT_IAM_CREDENTIALS),
            &a.scopes,
        )))),
        Err(e) => Box::new(Broken::new(&e)),
    }
}

/// A scalar as text (numbers without quotes).
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn compute_engine(config: &GceConfig, minted: &MintedIdToken) -> ComputeEngine {
    let instance = &config.instance;
    let zone = text(instance.get("zone"));
    let license_ids = match instance.get("licenses") {
        Some(Value::Array(items)) => items.iter().map(|l| text(l.get("id"))).collect(),
        _ => Vec::new(),
    };
    ComputeEngine {
        instance_creation_timestamp: minted.instance_creation_timestamp.unwrap_or(0),
        instance_id: text(instance.get("id")),
        instance_name: text(instance.get("name")),
        project_id: text(config.project.get("project-id")),
        project_number: config
            .numeric_project_id()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        zone: zone.rsplit('/').next().unwrap_or_default().to_string(),
        license_ids,
    }
}
