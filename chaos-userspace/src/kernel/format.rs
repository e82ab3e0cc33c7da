//! Tracepoint record layouts, read from tracefs `events/<group>/<name>/format` files.
//!
//! The format is written by the kernel in kernel/trace/trace_events.c (`f_show`):
//! `\tfield:<declaration>;\toffset:<n>;\tsize:<n>;\tsigned:<0|1>;` one field per line.

use std::path::{Path, PathBuf};

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C declaration as the kernel prints it, `pid_t pid` or `__data_loc char[] filename`.
    pub declaration: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

impl Field {
    pub fn is_data_loc(&self) -> bool {
        self.declaration.starts_with("__data_loc")
    }
}

/// The parsed `format` file of one tracepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub group: String,
    pub name: String,
    pub fields: Vec<Field>,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("tracepoint {group}:{name} does not exist on this kernel ({path})")]
    Missing {
        group: String,
        name: String,
        path: PathBuf,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed field line: {text}")]
    Malformed {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoField { tracepoint: String, field: String },
    #[error("field {tracepoint}.{field} is {actual} bytes, expected {expected}")]
    Size {
        tracepoint: String,
        field: String,
        actual: u32,
        expected: u32,
    },
}

impl Format {
    /// Reads `<tracefs>/events/<group>/<name>/format`.
    pub fn read(tracefs: &Path, group: &str, name: &str) -> Result<Self, FormatError> {
        let path = tracefs.join("events").join(group).join(name).join("format");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(FormatError::Missing {
                    group: group.into(),
                    name: name.into(),
                    path,
                });
            }
            Err(source) => return Err(FormatError::Read { path, source }),
        };
        Self::parse(&path, group, name, &text)
    }

    /// Parses the text of a format file; `path` only names it in errors.
    pub fn parse(path: &Path, group: &str, name: &str, text: &str) -> Result<Self, FormatError> {
        let mut fields = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let malformed = || FormatError::Malformed {
                path: path.to_path_buf(),
                line: index + 1,
                text: line.to_string(),
            };
            let mut parts = rest.split(';').map(str::trim);
            let declaration = parts.next().ok_or_else(malformed)?.to_string();
            let mut offset = None;
            let mut size = None;
            let mut signed = false;
            for part in parts.filter(|p| !p.is_empty()) {
                let (key, value) = part.split_once(':').ok_or_else(malformed)?;
                let number = || value.trim().parse::<u32>().map_err(|_| malformed());
                match key.trim() {
                    "offset" => offset = Some(number()?),
                    "size" => size = Some(number()?),
                    "signed" => signed = number()? != 0,
                    _ => {}
                }
            }
            let name = field_name(&declaration).ok_or_else(malformed)?;
            fields.push(Field {
                name,
                declaration,
                offset: offset.ok_or_else(malformed)?,
                size: size.ok_or_else(malformed)?,
                signed,
            });
        }
        Ok(Self {
            group: group.into(),
            name: name.into(),
            fields,
        })
    }

    pub fn field(&self, name: &str) -> Result<&Field, FormatError> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| FormatError::NoField {
                tracepoint: self.id(),
                field: name.into(),
            })
    }

    /// The offset of `name`, checking that the kernel declares it with `size` bytes.
    pub fn offset_of(&self, name: &str, size: u32) -> Result<u32, FormatError> {
        let field = self.field(name)?;
        if field.size != size {
            return Err(FormatError::Size {
                tracepoint: self.id(),
                field: name.into(),
                actual: field.size,
                expected: size,
            });
        }
        Ok(field.offset)
    }

    /// The offset of a `__data_loc` field (always a 4-byte descriptor).
    pub fn data_loc_offset(&self, name: &str) -> Result<u32, FormatError> {
        let field = self.field(name)?;
        if !field.is_data_loc() {
            return Err(FormatError::Size {
                tracepoint: self.id(),
                field: format!("{name} (not __data_loc)"),
                actual: field.size,
                expected: 4,
            });
        }
        self.offset_of(name, 4)
    }

    pub fn id(&self) -> String {
        format!("{}:{}", self.group, self.name)
    }
}

/// The identifier at the end of a C declaration: `char comm[16]` -> `comm`,
/// `__data_loc char[] filename` -> `filename`, `const char * name` -> `name`.
fn field_name(declaration: &str) -> Option<String> {
    let last = declaration.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // sched_process_fork as printed by 6.1 (char arrays) and by 6.18 (__data_loc strings): the
    // child_pid offset moved from 44 to 20.
    const FORK_6_1: &str = "name: sched_process_fork
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", REC->parent_comm, REC->parent_pid, REC->child_comm, REC->child_pid
";
    const FORK_6_18: &str = "name: sched_process_fork
ID: 366
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm), REC->parent_pid, __get_str(child_comm), REC->child_pid
";

    fn parse(text: &str) -> Format {
        Format::parse(Path::new("fixture"), "sched", "sched_process_fork", text).unwrap()
    }

    #[test]
    fn reads_both_generations_of_sched_process_fork() {
        let old = parse(FORK_6_1);
        let new = parse(FORK_6_18);
        assert_eq!(old.offset_of("child_pid", 4).unwrap(), 44);
        assert_eq!(new.offset_of("child_pid", 4).unwrap(), 20);
        assert_eq!(old.fields.len(), 8);
        assert!(new.field("parent_comm").unwrap().is_data_loc());
        assert!(!old.field("parent_comm").unwrap().is_data_loc());
        assert_eq!(old.field("parent_comm").unwrap().size, 16);
        assert!(old.field("child_pid").unwrap().signed);
    }

    #[test]
    fn checks_sizes_and_presence() {
        let new = parse(FORK_6_18);
        let err = new.offset_of("child_pid", 8).unwrap_err().to_string();
        assert_eq!(
            err,
            "field sched:sched_process_fork.child_pid is 4 bytes, expected 8"
        );
        let err = new.field("group_dead").unwrap_err().to_string();
        assert_eq!(
            err,
            "tracepoint sched:sched_process_fork has no field group_dead"
        );
        assert!(parse(FORK_6_1).data_loc_offset("parent_comm").is_err());
        assert_eq!(new.data_loc_offset("child_comm").unwrap(), 16);
    }

    #[test]
    fn names_the_line_of_a_malformed_field() {
        let text = "format:\n\tfield:int x;\toffset:eight;\tsize:4;\tsigned:1;\n";
        let err = Format::parse(Path::new("f"), "g", "n", text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f:2: malformed field line"), "{err}");
    }

    #[test]
    fn field_names_from_declarations() {
        assert_eq!(field_name("char comm[16]").as_deref(), Some("comm"));
        assert_eq!(
            field_name("__data_loc char[] filename").as_deref(),
            Some("filename")
        );
        assert_eq!(field_name("const char * name").as_deref(), Some("name"));
        assert_eq!(field_name("unsigned long *ptr").as_deref(), Some("ptr"));
    }
}
