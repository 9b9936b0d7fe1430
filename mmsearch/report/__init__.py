"""The paper reproduced: its findings as data, verdicts on them, and the report."""

from mmsearch._lazy import lazy_exports

__all__ = ["FINDINGS", "Finding", "Report", "ReportRequest", "Section", "KINDS", "Verdict", "judge_findings", "load_findings",
           "final_table", "reproduce", "verdict_table"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["FINDINGS", "Finding", "KINDS", "Verdict", "judge_findings", "load_findings"], "._findings"),
    **dict.fromkeys(["Report", "ReportRequest", "Section", "final_table", "reproduce", "verdict_table"], "._reproduce"),
})
