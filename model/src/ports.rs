//! Named ports of a task: their validated form ([`Port`]) and the checks
//! of the raw form a job file or the API gives.
//!
//! A task names the ports it listens on; the node that runs it picks a
//! host port for each from its range (or takes the `static` one) and
//! tells the task through `SHOAL_PORT_<NAME>`. A docker task also says
//! which port inside the container each maps to (`container_port`); a
//! process listens on the host port itself, so it has none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::Runtime;

/// `tcp` or `udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A named port of a task. The node that runs it gives it a host port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Port {
    /// Name (the task sees `SHOAL_PORT_<NAME>`; DNS SRV names it
    /// `_<name>._<protocol>`).
    pub name: String,
    /// Port inside the container the host port maps to (docker only,
    /// required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// This host port rather than one from the node's range: the task
    /// goes only to a node where it is free.
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    pub static_port: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
}

/// A port as a job file or the API gives it, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPort {
    name: Option<String>,
    container_port: Option<i64>,
    #[serde(rename = "static")]
    static_port: Option<i64>,
    protocol: Option<String>,
}

/// A port number 1-65535, or the problem with it.
fn port_number(n: i64) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("must be 1-65535 (got {n})")),
    }
}

/// Validates the ports of a task run by `runtime`; each problem goes to
/// `add(field, message)`.
pub(crate) fn validate_ports(
    raw: Vec<RawPort>,
    runtime: Runtime,
    add: &mut dyn FnMut(String, String),
) -> Vec<Port> {
    // Lower-case name -> index of its first use; (static, protocol) ->
    // index of its first use.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut statics: BTreeMap<(u16, Protocol), usize> = BTreeMap::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, port)| {
            let field = format!("task.ports[{i}]");
            let name = port.name.unwrap_or_default();
            let valid_name = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                add(
                    format!("{field}.name"),
                    "1-32 letters, digits, '_' or '-'".into(),
                );
            } else if let Some(first) = names.get(&name.to_ascii_lowercase()) {
                add(
                    format!("{field}.name"),
                    format!(
                        "{name:?} is used twice (task.ports[{first}] has it too); give each port its own name"
                    ),
                );
            } else {
                names.insert(name.to_ascii_lowercase(), i);
            }
            let protocol = match port.protocol.as_deref() {
                None | Some("tcp") => Protocol::Tcp,
                Some("udp") => Protocol::Udp,
                Some(other) => {
                    add(
                        format!("{field}.protocol"),
                        format!("tcp or udp (got {other:?})"),
                    );
                    Protocol::Tcp
                }
            };
            let container_port = match (runtime, port.container_port) {
                (Runtime::Docker, None) => {
                    add(
                        format!("{field}.container_port"),
                        "is required for a docker task: the port inside the container".into(),
                    );
                    None
                }
                (Runtime::Docker, Some(n)) => port_number(n)
                    .map_err(|e| add(format!("{field}.container_port"), e))
                    .ok(),
                (Runtime::Process, Some(_)) => {
                    add(
                        format!("{field}.container_port"),
                        format!(
                            "only docker tasks map a container port; a process listens on the port the node gives it (SHOAL_PORT_{})",
                            crate::port_env_name(&name)
                        ),
                    );
                    None
                }
                (Runtime::Process, None) => None,
            };
            let static_port = port.static_port.and_then(|n| {
                let p = port_number(n)
                    .map_err(|e| add(format!("{field}.static"), e))
                    .ok()?;
                if let Some(first) = statics.get(&(p, protocol)) {
                    add(
                        format!("{field}.static"),
                        format!(
                            "port {p}/{} is task.ports[{first}] already",
                            protocol.as_str()
                        ),
                    );
                } else {
                    statics.insert((p, protocol), i);
                }
                Some(p)
            });
            Port {
                name,
                container_port,
                static_port,
                protocol,
            }
        })
        .collect()
}

/// `SHOAL_PORT_<NAME>`'s `<NAME>`: upper case, anything other than a
/// letter or a digit → `_`.
pub fn port_env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::JobSpec;

    fn task(runtime: &str, ports: serde_json::Value) -> serde_json::Value {
        let mut t = json!({"runtime": runtime, "ports": ports});
        match runtime {
            "docker" => t["image"] = json!("app:1"),
            _ => t["command"] = json!("/bin/true"),
        }
        json!({"name": "web", "task": t})
    }

    fn fields(v: serde_json::Value) -> Vec<(String, String)> {
        match JobSpec::from_json(v) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|e| (e.field, e.message)).collect(),
        }
    }

    #[test]
    fn a_process_task_names_ports_and_may_fix_one() {
        let spec = JobSpec::from_json(task(
            "process",
            json!([{"name": "http"}, {"name": "dns", "static": 5353, "protocol": "udp"}]),
        ))
        .unwrap();
        let ports = &spec.task.ports;
        assert_eq!(ports[0].container_port, None);
        assert_eq!(ports[0].static_port, None);
        assert_eq!(ports[1].static_port, Some(5353));
        // The canonical form writes `static` under its own name, and reads
        // back the same.
        let text = serde_json::to_string(&spec).unwrap();
        assert!(text.contains(r#""static":5353"#), "{text}");
        assert_eq!(JobSpec::from_json(spec.to_json()).unwrap(), spec);
    }

    #[test]
    fn container_ports_belong_to_docker_tasks_only() {
        let f = fields(task(
            "process",
            json!([{"name": "http", "container_port": 80}]),
        ));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "task.ports[0].container_port");
        assert!(f[0].1.contains("SHOAL_PORT_HTTP"), "{f:?}");
        let f = fields(task("docker", json!([{"name": "http"}])));
        assert_eq!(f[0].0, "task.ports[0].container_port");
        assert!(f[0].1.contains("is required"), "{f:?}");
    }

    #[test]
    fn a_name_used_twice_is_refused_with_the_field_of_the_second() {
        let f = fields(task(
            "process",
            json!([{"name": "http"}, {"name": "admin"}, {"name": "HTTP"}]),
        ));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "task.ports[2].name");
        assert!(f[0].1.contains("used twice"), "{f:?}");
        assert!(f[0].1.contains("task.ports[0]"), "{f:?}");
    }

    #[test]
    fn static_ports_are_port_numbers_each_used_once_per_protocol() {
        let f = fields(task(
            "process",
            json!([
                {"name": "a", "static": 8080},
                {"name": "b", "static": 8080, "protocol": "udp"},
                {"name": "c", "static": 8080},
                {"name": "d", "static": 0},
                {"name": "e", "static": 70000}
            ]),
        ));
        let got: Vec<&str> = f.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            got,
            [
                "task.ports[2].static",
                "task.ports[3].static",
                "task.ports[4].static"
            ],
            "{f:?}"
        );
        assert!(f[1].1.contains("1-65535 (got 0)"), "{f:?}");
    }
}
