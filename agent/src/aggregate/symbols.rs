//! Runtime addresses of a target process turned into functions and source lines (from the
//! binary's `.gopclntab`, inlined calls expanded), and what counts as whose code.

use serde::Serialize;

use super::ProcessState;
use crate::target::GoTarget;

/// A source location.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl Frame {
    /// `function file:line` with the file's directories left out: a label value.
    pub fn short(&self) -> String {
        let file = self.file.rsplit('/').next().unwrap_or(&self.file);
        format!("{} {file}:{}", self.function, self.line)
    }
}

/// Turns runtime addresses of one process into functions and source lines.
pub struct Symbolizer<'a> {
    pub process: &'a ProcessState,
    pub target: &'a GoTarget,
}

impl Symbolizer<'_> {
    /// The function containing runtime address `pc`.
    pub fn function(&self, pc: u64) -> Option<String> {
        let addr = self.process.link_address(pc)?;
        self.target.binary.pclntab().func_at(addr).map(|f| f.name)
    }

    /// The calls at return address (or `go` statement PC) `pc`, innermost first: the
    /// functions inlined there, then the one holding the code. The instruction before `pc` is
    /// the call, as the runtime's own tracebacks look it up (runtime/traceback.go).
    pub fn call_sites(&self, pc: u64) -> Vec<Frame> {
        let Some(addr) = self.process.link_address(pc) else {
            return Vec::new();
        };
        let pclntab = self.target.binary.pclntab();
        let Some(f) = pclntab.func_at(addr) else {
            return Vec::new();
        };
        let at = if addr > f.entry { addr - 1 } else { addr };
        pclntab
            .frames_at(at)
            .into_iter()
            .map(|s| Frame {
                function: s.function,
                file: s.file,
                line: s.line,
            })
            .collect()
    }

    /// The innermost call at `pc`.
    pub fn call_site(&self, pc: u64) -> Option<Frame> {
        self.call_sites(pc).into_iter().next()
    }

    /// The frame a developer would look at: the first outside the Go runtime and standard
    /// library (the main module or a dependency), else the first outside the runtime.
    pub fn user_frame<'f>(&self, stack: &'f [Frame]) -> Option<&'f Frame> {
        let info = self.target.binary.build_info();
        let is_module_code = |f: &Frame| {
            let pkg = package_of(&f.function);
            pkg == "main"
                || info
                    .main_module
                    .as_ref()
                    .is_some_and(|m| under_module(pkg, &m.path))
                || info.deps.iter().any(|d| under_module(pkg, &d.path))
        };
        stack.iter().find(|f| is_module_code(f)).or_else(|| {
            stack.iter().find(|f| {
                let pkg = package_of(&f.function);
                pkg != "runtime" && !pkg.starts_with("internal/") && !pkg.starts_with("runtime/")
            })
        })
    }
}

/// Whether a goroutine that started in `start_function` is one of the runtime's own, as
/// runtime/traceback.go `isSystemGoroutine` decides: it started in package runtime, but not
/// in `runtime.main` (nor the runtime's entry points into user code). The finalizer and
/// cleanup goroutines count as the runtime's, as the runtime counts them between calls.
pub fn is_system_goroutine(start_function: &str) -> bool {
    start_function.starts_with("runtime.")
        && !matches!(
            start_function,
            "runtime.main" | "runtime.corostart" | "runtime.handleAsyncEvent"
        )
}

fn under_module(pkg: &str, module: &str) -> bool {
    pkg == module
        || pkg
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The import path of a Go function's package: `net/http.(*conn).serve` → `net/http`,
/// `github.com/a/b.F` → `github.com/a/b`.
fn package_of(function: &str) -> &str {
    let last_slash = function.rfind('/').map_or(0, |i| i + 1);
    match function[last_slash..].find('.') {
        Some(dot) => &function[..last_slash + dot],
        None => function,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_goroutines_as_the_runtime_says() {
        assert!(is_system_goroutine("runtime.gcBgMarkWorker"));
        assert!(is_system_goroutine(
            "runtime.unique_runtime_registerUniqueMapCleanup.gowrap1"
        ));
        assert!(!is_system_goroutine("runtime.main"));
        assert!(!is_system_goroutine("main.main.func1"));
        assert!(!is_system_goroutine("net/http.(*conn).serve"));
    }

    #[test]
    fn packages_of_functions() {
        assert_eq!(package_of("main.worker"), "main");
        assert_eq!(package_of("main.(*server).handle.func1"), "main");
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(
            package_of("github.com/acme/app/internal/db.(*Pool).Get"),
            "github.com/acme/app/internal/db"
        );
        assert_eq!(package_of("runtime.gopark"), "runtime");
        assert!(under_module(
            "github.com/acme/app/db",
            "github.com/acme/app"
        ));
        assert!(!under_module(
            "github.com/acme/application",
            "github.com/acme/app"
        ));
    }
}
