//! PostgreSQL snapshots (`pg_current_snapshot()`), used to apply each committed event to the
//! windows exactly once across a rebuild.
//!
//! A workspace actor rebuilds its windows from a REPEATABLE READ read and keeps that read's
//! snapshot. The writer tags every apply with its transaction id. A transaction visible in the
//! snapshot was already counted by the rebuild, so its apply is skipped; any other was not,
//! so it is applied. This is exact, whatever the interleaving of commits, applies and rebuild.

/// `xmin:xmax:xip,...` as PostgreSQL prints a `pg_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Self {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// Whether the work of transaction `xid` (committed) is visible in this snapshot.
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_follows_postgres_rules() {
        let s = Snapshot::parse("100:105:101,103").unwrap();
        let table = [
            (99, true),
            (100, true),
            (101, false),
            (102, true),
            (103, false),
            (104, true),
            (105, false),
            (200, false),
        ];
        for (xid, seen) in table {
            assert_eq!(s.sees(xid), seen, "xid {xid}");
        }
        assert!(Snapshot::parse("7:7:").unwrap().sees(6));
        assert!(Snapshot::parse("x:1:").is_none());
        assert!(Snapshot::parse("1:2:a").is_none());
    }
}
