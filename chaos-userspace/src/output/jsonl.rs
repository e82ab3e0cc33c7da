//! JSON Lines: the format documented in [`crate::event`].

use std::io::Write;

use super::Sink;
use crate::event::{Event, Summary};

/// Lines that are not events, tagged like events so that "type" comes first.
#[derive(serde::Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
enum Trailer<'a> {
    Summary(&'a Summary),
}

pub struct JsonLines<W: Write> {
    out: W,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> Sink for JsonLines<W> {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    fn summary(&mut self, summary: &Summary) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, &Trailer::Summary(summary))?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    /// The wire format is a contract: these lines are what users' scripts parse.
    #[test]
    fn snapshot_of_every_line_type() {
        let events = [
            Event::Fork(Fork {
                ts_ns: 10,
                parent_pid: 1000,
                child_pid: 1001,
            }),
            Event::Exec(Exec {
                ts_ns: 11,
                pid: 1001,
                ppid: 1000,
                old_pid: 1001,
                comm: "true".into(),
                filename: "/usr/bin/true".into(),
            }),
            Event::Exit(Exit::from_raw(
                12,
                1001,
                1000,
                "true".into(),
                3 << 8,
                2,
                Some(4096),
            )),
            Event::Signal(Signal {
                ts_ns: 13,
                sender_pid: 999,
                sender_comm: "kill".into(),
                target_pid: 1000,
                target_comm: "svc".into(),
                signal: 9,
                signal_name: "SIGKILL".into(),
                code: 0,
                group: true,
                result: "delivered".into(),
            }),
            Event::Fsync(Fsync {
                ts_ns: 14,
                pid: 1000,
                call: "ext4_sync_file".into(),
                fd: None,
                dev: Some("254:0".into()),
                ino: Some(77),
                datasync: Some(false),
                latency_ns: 1500,
                ret: 0,
            }),
            Event::Reap(Reap {
                ts_ns: 15,
                pid: 1000,
                child_pid: 1001,
            }),
            Event::Listen(Listen {
                ts_ns: 16,
                pid: 1002,
                port: 8080,
                family: "inet".into(),
            }),
        ];
        let mut out = Vec::new();
        let mut sink = JsonLines::new(&mut out);
        let mut counts = EventCounts::default();
        for e in &events {
            sink.event(e).unwrap();
            counts.add(e);
        }
        sink.summary(&Summary {
            duration_ns: 100,
            events: counts,
            lost: 0,
            targets_full: 0,
            read_errors: 0,
        })
        .unwrap();
        let expected = r#"{"type":"fork","data":{"ts_ns":10,"parent_pid":1000,"child_pid":1001}}
{"type":"exec","data":{"ts_ns":11,"pid":1001,"ppid":1000,"old_pid":1001,"comm":"true","filename":"/usr/bin/true"}}
{"type":"exit","data":{"ts_ns":12,"pid":1001,"ppid":1000,"comm":"true","exit_code":3,"signal":0,"core_dumped":false,"lifetime_ns":2,"unsynced_bytes":4096}}
{"type":"signal","data":{"ts_ns":13,"sender_pid":999,"sender_comm":"kill","target_pid":1000,"target_comm":"svc","signal":9,"signal_name":"SIGKILL","code":0,"group":true,"result":"delivered"}}
{"type":"fsync","data":{"ts_ns":14,"pid":1000,"call":"ext4_sync_file","fd":null,"dev":"254:0","ino":77,"datasync":false,"latency_ns":1500,"ret":0}}
{"type":"reap","data":{"ts_ns":15,"pid":1000,"child_pid":1001}}
{"type":"listen","data":{"ts_ns":16,"pid":1002,"port":8080,"family":"inet"}}
{"type":"summary","data":{"duration_ns":100,"events":{"fork":1,"exec":1,"exit":1,"signal":1,"fsync":1,"reap":1,"listen":1},"lost":0,"targets_full":0,"read_errors":0}}
"#;
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        // And every event line reads back as the same event.
        for (line, event) in expected.lines().zip(&events) {
            assert_eq!(&serde_json::from_str::<Event>(line).unwrap(), event);
        }
    }
}
