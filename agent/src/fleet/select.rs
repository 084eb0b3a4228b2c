//! `--include` / `--exclude`: which of the host's Go processes `gort run --all` watches.

use globset::{Glob, GlobMatcher};

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The executable: its file name or its whole path as the process sees it.
    Exe,
    /// The `service` label (OTEL_SERVICE_NAME, else the executable's name).
    Service,
    /// Any of the process's cgroup paths (`/proc/PID/cgroup`).
    Cgroup,
}

/// One `FIELD=GLOB` rule.
#[derive(Debug, Clone)]
pub struct Rule {
    field: Field,
    glob: GlobMatcher,
}

impl std::str::FromStr for Rule {
    type Err = String;

    /// `exe=GLOB`, `service=GLOB` or `cgroup=GLOB` (`*` also matches `/`); a bare `GLOB`
    /// is an `exe` rule.
    fn from_str(s: &str) -> Result<Rule, String> {
        let (field, pattern) = match s.split_once('=') {
            Some(("exe", p)) => (Field::Exe, p),
            Some(("service", p)) => (Field::Service, p),
            Some(("cgroup", p)) => (Field::Cgroup, p),
            Some((other, _)) => {
                return Err(format!(
                    "unknown field `{other}` in `{s}`: use exe=, service= or cgroup="
                ));
            }
            None => (Field::Exe, s),
        };
        if pattern.is_empty() {
            return Err(format!("empty pattern in `{s}`"));
        }
        let glob = Glob::new(pattern)
            .map_err(|e| format!("bad pattern `{pattern}`: {e}"))?
            .compile_matcher();
        Ok(Rule { field, glob })
    }
}

/// What the rules see of a process.
#[derive(Debug, Clone, Default)]
pub struct ProcessFacts {
    /// The executable's path as the process sees it.
    pub exe: String,
    pub service: String,
    /// `/proc/PID/cgroup` as read.
    pub cgroup: String,
}

impl Rule {
    fn matches(&self, p: &ProcessFacts) -> bool {
        match self.field {
            Field::Exe => {
                let name = p.exe.rsplit('/').next().unwrap_or(&p.exe);
                self.glob.is_match(name) || self.glob.is_match(&p.exe)
            }
            Field::Service => self.glob.is_match(&p.service),
            Field::Cgroup => p
                .cgroup
                .lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .any(|path| self.glob.is_match(path)),
        }
    }
}

/// Include and exclude rules: a process is watched when it matches an include rule (or there
/// are none) and no exclude rule.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub include: Vec<Rule>,
    pub exclude: Vec<Rule>,
}

impl Selector {
    pub fn selects(&self, p: &ProcessFacts) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.matches(p)))
            && !self.exclude.iter().any(|r| r.matches(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(exe: &str, service: &str, cgroup: &str) -> ProcessFacts {
        ProcessFacts {
            exe: exe.into(),
            service: service.into(),
            cgroup: cgroup.into(),
        }
    }

    fn selector(include: &[&str], exclude: &[&str]) -> Selector {
        Selector {
            include: include.iter().map(|r| r.parse().unwrap()).collect(),
            exclude: exclude.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn parses_rules() {
        assert_eq!("exe=api*".parse::<Rule>().unwrap().field, Field::Exe);
        assert_eq!("api*".parse::<Rule>().unwrap().field, Field::Exe);
        assert_eq!("service=x".parse::<Rule>().unwrap().field, Field::Service);
        assert_eq!("cgroup=*pod*".parse::<Rule>().unwrap().field, Field::Cgroup);
        assert!(
            "pid=3"
                .parse::<Rule>()
                .unwrap_err()
                .contains("unknown field")
        );
        assert!("exe=".parse::<Rule>().unwrap_err().contains("empty"));
        assert!("exe=[".parse::<Rule>().unwrap_err().contains("bad pattern"));
    }

    #[test]
    fn selects_by_exe_service_and_cgroup() {
        let api = facts(
            "/srv/bin/api-server",
            "checkout",
            "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope\n",
        );
        let batch = facts(
            "/usr/local/bin/batch",
            "batch",
            "0::/system.slice/batch.service\n",
        );
        let all = selector(&[], &[]);
        assert!(all.selects(&api) && all.selects(&batch));

        let by_name = selector(&["api-*"], &[]);
        assert!(by_name.selects(&api) && !by_name.selects(&batch));
        let by_path = selector(&["exe=/usr/local/*"], &[]);
        assert!(!by_path.selects(&api) && by_path.selects(&batch));
        let by_service = selector(&[], &["service=checkout"]);
        assert!(!by_service.selects(&api) && by_service.selects(&batch));
        let by_cgroup = selector(&["cgroup=/kubepods*"], &[]);
        assert!(by_cgroup.selects(&api) && !by_cgroup.selects(&batch));
        // Exclusion wins over inclusion.
        let both = selector(&["cgroup=*"], &["exe=batch"]);
        assert!(both.selects(&api) && !both.selects(&batch));
    }
}
