//! The `/metadata/instance` document as IMDS shows it, built from the user's free-form one.
//!
//! Contract: [`document`] returns `{"compute": {...}, "network": {...}}` where
//! - every field of the IMDS schema [IMDS][Spec] is present: a field the user left out shows as
//!   `""` (objects as objects of `""`, arrays as `[]`), because IMDS "always includes missing or
//!   inapplicable values, set to an empty string";
//! - every primitive is a string (`0` → `"0"`, `true` → `"true"`, `null` → `""`);
//! - schema fields come in IMDS's order (alphabetical, as real responses show), fields the user
//!   added follow in the user's order;
//! - `tags` and `tagsList` agree: the one left out is derived from the other (validation has
//!   already rejected a file where both are given and disagree).
//!
//! Items of schema arrays (`publicKeys`, `tagsList`, `dataDisks`, `interface`, `ipAddress`,
//! `subnet`) get the item schema filled in the same way.

use serde_json::{json, Map, Value};

use crate::config::azure::{join_tags, scalar_text, split_tags, InstanceDocument};

/// The whole instance document.
pub fn document(config: &InstanceDocument) -> Value {
    let compute = with_tags(&config.compute);
    let skeleton = skeleton();
    let mut doc = Map::new();
    doc.insert(
        "compute".into(),
        merge(&skeleton["compute"], Some(&Value::Object(compute))),
    );
    doc.insert(
        "network".into(),
        merge(
            &skeleton["network"],
            Some(&Value::Object(config.network.clone())),
        ),
    );
    Value::Object(doc)
}

/// `compute` with whichever of `tags` / `tagsList` is missing derived from the other.
fn with_tags(compute: &Map<String, Value>) -> Map<String, Value> {
    let mut out = compute.clone();
    let tags = compute.get("tags").and_then(scalar_text);
    let list = compute.get("tagsList").and_then(Value::as_array);
    match (tags, list) {
        (Some(tags), None) => {
            let items = split_tags(&tags)
                .into_iter()
                .map(|(name, value)| json!({ "name": name, "value": value }))
                .collect();
            out.insert("tagsList".into(), Value::Array(items));
        }
        (None, Some(list)) => {
            let pairs: Vec<(String, String)> = list
                .iter()
                .map(|item| {
                    let field = |k: &str| {
                        item.get(k)
                            .and_then(scalar_text)
                            .map(|s| s.into_owned())
                            .unwrap_or_default()
                    };
                    (field("name"), field("value"))
                })
                .collect();
            out.insert("tags".into(), Value::String(join_tags(&pairs)));
        }
        _ => {}
    }
    out
}

/// Lays `user` over `skeleton`: see the module contract.
fn merge(skeleton: &Value, user: Option<&Value>) -> Value {
    match (skeleton, user) {
        (Value::Object(fields), Some(Value::Object(given))) => {
            let mut out = Map::new();
            for (k, s) in fields {
                out.insert(k.clone(), merge(s, given.get(k)));
            }
            for (k, v) in given {
                if !fields.contains_key(k) {
                    out.insert(k.clone(), stringify(v));
                }
            }
            Value::Object(out)
        }
        (Value::Object(fields), None) => Value::Object(
            fields
                .iter()
                .map(|(k, s)| (k.clone(), merge(s, None)))
                .collect(),
        ),
        (Value::Array(template), Some(Value::Array(items))) => match template.first() {
            Some(item_schema) => Value::Array(
                items
                    .iter()
                    .map(|item| merge(item_schema, Some(item)))
                    .collect(),
            ),
            None => stringify(&Value::Array(items.clone())),
        },
        (Value::Array(_), None) => Value::Array(Vec::new()),
        (_, Some(v)) => stringify(v),
        (_, None) => Value::String(String::new()),
    }
}

/// Every primitive as the string IMDS would show.
pub fn stringify(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), stringify(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(stringify).collect()),
        other => Value::String(
            scalar_text(other)
                .map(|s| s.into_owned())
                .unwrap_or_default(),
        ),
    }
}

/// The IMDS instance schema [IMDS][Spec], fields in IMDS's order. `""` stands for any string;
/// an array holds the schema of its items.
fn skeleton() -> Value {
    json!({
        "compute": {
            "additionalCapabilities": { "hibernationEnabled": "" },
            "azEnvironment": "",
            "customData": "",
            "evictionPolicy": "",
            "extendedLocation": { "type": "", "name": "" },
            "host": { "id": "" },
            "hostGroup": { "id": "" },
            "isHostCompatibilityLayerVm": "",
            "licenseType": "",
            "location": "",
            "name": "",
            "offer": "",
            "osProfile": {
                "adminUsername": "",
                "computerName": "",
                "disablePasswordAuthentication": ""
            },
            "osType": "",
            "physicalZone": "",
            "placementGroupId": "",
            "plan": { "name": "", "product": "", "publisher": "" },
            "platformFaultDomain": "",
            "platformSubFaultDomain": "",
            "platformUpdateDomain": "",
            "priority": "",
            "provider": "",
            "publicKeys": [{ "keyData": "", "path": "" }],
            "publisher": "",
            "resourceGroupName": "",
            "resourceId": "",
            "securityProfile": {
                "secureBootEnabled": "",
                "virtualTpmEnabled": "",
                "encryptionAtHost": "",
                "securityType": ""
            },
            "sku": "",
            "storageProfile": {
                "dataDisks": [data_disk()],
                "imageReference": {
                    "id": "",
                    "offer": "",
                    "publisher": "",
                    "sku": "",
                    "version": "",
                    "communityGalleryImageId": "",
                    "sharedGalleryImageId": "",
                    "exactVersion": ""
                },
                "osDisk": os_disk(),
                "resourceDisk": { "size": "" }
            },
            "subscriptionId": "",
            "tags": "",
            "tagsList": [{ "name": "", "value": "" }],
            "userData": "",
            "version": "",
            "virtualMachineScaleSet": { "id": "" },
            "vmId": "",
            "vmScaleSetName": "",
            "vmSize": "",
            "zone": ""
        },
        "network": {
            "interface": [{
                "ipv4": {
                    "ipAddress": [{ "privateIpAddress": "", "publicIpAddress": "" }],
                    "subnet": [{ "address": "", "prefix": "" }]
                },
                "ipv6": { "ipAddress": [{ "privateIpAddress": "" }] },
                "macAddress": ""
            }]
        }
    })
}

/// The schema of `storageProfile.osDisk`.
fn os_disk() -> Value {
    json!({
        "caching": "",
        "createOption": "",
        "diffDiskSettings": { "option": "" },
        "diskSizeGB": "",
        "encryptionSettings": { "enabled": "" },
        "image": { "uri": "" },
        "managedDisk": { "id": "", "storageAccountType": "" },
        "name": "",
        "osType": "",
        "vhd": { "uri": "" },
        "writeAcceleratorEnabled": ""
    })
}

/// The schema of an item of `storageProfile.dataDisks`.
fn data_disk() -> Value {
    json!({
        "bytesPerSecondThrottle": "",
        "caching": "",
        "createOption": "",
        "diffDiskSettings": { "option": "" },
        "diskCapacityBytes": "",
        "diskSizeGB": "",
        "encryptionSettings": { "enabled": "" },
        "image": { "uri": "" },
        "isSharedDisk": "",
        "isUltraDisk": "",
        "lun": "",
        "managedDisk": { "id": "", "storageAccountType": "" },
        "name": "",
        "opsPerSecondThrottle": "",
        "osType": "",
        "vhd": { "uri": "" },
        "writeAcceleratorEnabled": ""
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(compute: Value, network: Value) -> Value {
        let (Value::Object(compute), Value::Object(network)) = (compute, network) else {
            panic!("objects expected");
        };
        document(&InstanceDocument { compute, network })
    }

    #[test]
    fn missing_fields_show_as_empty_strings_in_schema_order() {
        let d = doc(json!({"vmId": "x", "zzCustom": 7}), json!({}));
        let compute = d["compute"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>());
        let keys = compute.unwrap_or_default();
        assert_eq!(
            keys.first().map(String::as_str),
            Some("additionalCapabilities")
        );
        assert_eq!(keys.last().map(String::as_str), Some("zzCustom"));
        assert_eq!(
            d["compute"]["plan"],
            json!({"name": "", "product": "", "publisher": ""})
        );
        assert_eq!(d["compute"]["publicKeys"], json!([]));
        assert_eq!(d["compute"]["zzCustom"], json!("7"));
        assert_eq!(d["network"], json!({"interface": []}));
    }

    #[test]
    fn primitives_become_strings_and_items_get_their_schema() {
        let d = doc(
            json!({"platformFaultDomain": 0, "osProfile": {"disablePasswordAuthentication": true},
                   "licenseType": null}),
            json!({"interface": [{"ipv4": {"ipAddress": [{"privateIpAddress": "10.0.0.4"}]},
                                  "macAddress": "000D3AF806EC"}]}),
        );
        assert_eq!(d["compute"]["platformFaultDomain"], json!("0"));
        assert_eq!(
            d["compute"]["osProfile"]["disablePasswordAuthentication"],
            json!("true")
        );
        assert_eq!(d["compute"]["licenseType"], json!(""));
        let nic = &d["network"]["interface"][0];
        assert_eq!(
            nic["ipv4"]["ipAddress"][0],
            json!({"privateIpAddress": "10.0.0.4", "publicIpAddress": ""})
        );
        assert_eq!(nic["ipv4"]["subnet"], json!([]));
        assert_eq!(nic["ipv6"], json!({"ipAddress": []}));
    }

    #[test]
    fn tags_and_tags_list_are_derived_from_each_other() {
        let d = doc(json!({"tags": "a:1;b:"}), json!({}));
        assert_eq!(
            d["compute"]["tagsList"],
            json!([{"name": "a", "value": "1"}, {"name": "b", "value": ""}])
        );
        let d = doc(
            json!({"tagsList": [{"name": "env", "value": "dev"}, {"name": "n", "value": 1}]}),
            json!({}),
        );
        assert_eq!(d["compute"]["tags"], json!("env:dev;n:1"));
        assert_eq!(d["compute"]["tagsList"][1]["value"], json!("1"));
    }

    #[test]
    fn a_user_value_of_another_shape_wins_over_the_schema() {
        let d = doc(json!({"plan": "none", "publicKeys": {"k": 1}}), json!({}));
        assert_eq!(d["compute"]["plan"], json!("none"));
        assert_eq!(d["compute"]["publicKeys"], json!({"k": "1"}));
    }
}
