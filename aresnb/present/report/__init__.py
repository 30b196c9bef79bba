"""`aresnb report RUN_DIR`: one self-contained HTML page that tells the run's whole story.

A banner names the data, the model size and the Teacher (a smoke check or paper scale); the
headline figures (regressions flagged); then a section per stage with its numbers, figures and
tables (key columns, each linking its full CSV); the Figure-3 examples embedded; judged examples;
each step's status and the manifest. Figures are inlined as base64, there is no script, font or
network access, and no path of the machine that ran it: the page opens anywhere, offline.
A run that has not finished gets a report of what exists.
"""

from aresnb.present.report.examples import CSS_EXAMPLES, choose_examples, example_html, examples_html
from aresnb.present.report.facts import Fact, headline_facts, headline_lines, run_banner
from aresnb.present.report.page import headline_html, render_report, write_report
from aresnb.present.report.parts import CSS
from aresnb.present.report.sections import SECTION_IDS

__all__ = ["CSS", "CSS_EXAMPLES", "Fact", "SECTION_IDS", "choose_examples", "example_html", "examples_html",
           "headline_facts", "headline_html", "headline_lines", "render_report", "run_banner", "write_report"]
