//! `GET /v1/openapi.json`: the checked-in document, every route of the router in
//! it (and none missing), and real answers that validate against its schemas.

use serde_json::{json, Value};

use crate::helpers::*;

async fn document(d: &TestDaemon) -> Value {
    let a = d.get("/v1/openapi.json").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

/// A validator for the component `name`, strict: an object schema lists every
/// field the daemon sends (`additionalProperties: false` where it says nothing).
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    fn close_objects(schema: &mut Value) {
        match schema {
            Value::Object(map) => {
                if map.get("type") == Some(&json!("object")) && map.contains_key("properties") {
                    map.entry("additionalProperties").or_insert(json!(false));
                }
                map.values_mut().for_each(close_objects);
            }
            Value::Array(items) => items.iter_mut().for_each(close_objects),
            _ => {}
        }
    }
    let mut components = doc["components"].clone();
    close_objects(&mut components);
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": components,
    });
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema {name}: {e}"))
}

#[track_caller]
fn assert_valid(doc: &Value, name: &str, instance: &Value) {
    let errors: Vec<String> = validator(doc, name)
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not validate {instance}: {errors:?}"
    );
}

#[tokio::test]
async fn the_served_document_is_the_checked_in_one_and_wants_the_token() {
    let d = charm_only_daemon().await;
    let anonymous = d
        .send(d.http.get(format!("{}/v1/openapi.json", d.base)))
        .await;
    anonymous.expect(401, "unauthorized");
    let served = document(&d).await;
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(served, checked_in, "run `make openapi`");
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(
        served["paths"]["/v1/health"]["get"]["security"],
        json!([{}])
    );
    assert_eq!(served["security"], json!([{"bearer": []}]));
}

#[tokio::test]
async fn every_route_is_in_the_document_and_every_documented_route_is_served() {
    let d = charm_only_daemon().await;
    let doc = document(&d).await;
    let paths = doc["paths"].as_object().unwrap();
    let methods = ["get", "post", "put", "delete", "patch"];
    let mut documented = Vec::new();
    for (path, item) in paths {
        let concrete = path.replace("{id}", &"0".repeat(32));
        for method in methods {
            let request = d.authed(method.to_uppercase().parse().unwrap(), &concrete);
            let answer = d.send(request).await;
            if item.get(method).is_some() {
                documented.push(format!("{} {path}", method.to_uppercase()));
                // Served: anything but "no such endpoint" or "method not allowed".
                assert_ne!(answer.status, 405, "{method} {path}: {:?}", answer.body);
                assert!(
                    !(answer.status == 404 && answer.message() == "no such endpoint"),
                    "{method} {path} is documented but not routed"
                );
            } else {
                // A method the document does not list is not routed either.
                answer.expect(405, "method_not_allowed");
            }
        }
    }
    documented.sort();
    // The contract's endpoints, each in the document (and nothing else is).
    assert_eq!(
        documented,
        [
            "GET /metrics",
            "GET /v1/health",
            "GET /v1/images/latest",
            "GET /v1/jobs",
            "GET /v1/jobs/{id}",
            "GET /v1/openapi.json",
            "GET /v1/status",
            "POST /v1/images",
            "PUT /v1/clouds",
        ]
    );
    // A path the document does not list is not routed.
    d.get("/v1/uploads").await.expect(404, "not_found");
}

#[tokio::test]
async fn real_answers_validate_against_the_documents_schemas() {
    let d = charm_only_daemon().await;
    let doc = document(&d).await;
    let glance = Direct::charm();
    let app = unique_app("schema");
    assert_valid(&doc, "Latest", &d.latest(&app, None).await.body);

    let file = write_raw_image(&d.upload_dir, "schema.img", 1024 * 1024);
    let upload = d
        .upload(&app, &file, 1, json!({"properties": {"purpose": "schema"}}))
        .await;
    assert_eq!(upload.status, 201, "{:?}", upload.body);
    assert_valid(&doc, "UploadAnswer", &upload.body);
    let latest = d.latest(&app, None).await;
    assert_eq!(latest.body["id"], upload.body["id"]);
    assert_valid(&doc, "Latest", &latest.body);

    let jobs = d.get("/v1/jobs").await.body;
    assert_valid(&doc, "JobList", &jobs);
    let job = &jobs["jobs"][0];
    assert_eq!(job["image_id"], upload.body["id"]);
    assert_valid(&doc, "Job", job);
    assert_valid(&doc, "Status", &d.status().await);
    assert_valid(&doc, "Health", &d.get("/v1/health").await.body);
    assert_valid(&doc, "ErrorBody", &d.get("/v1/jobs/nothing").await.body);

    // The schemas are not so loose that anything passes.
    let mut renamed = job.clone();
    let fields = renamed.as_object_mut().unwrap();
    let sent = fields.remove("bytes_sent").unwrap();
    fields.insert("bytes_done".into(), sent);
    assert!(!validator(&doc, "Job").is_valid(&renamed));
    glance.delete(upload.body["id"].as_str().unwrap()).await;
}
