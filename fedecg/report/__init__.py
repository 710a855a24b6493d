"""Self-contained HTML run reports and the plots they embed."""

from fedecg.report.html import HtmlPage, figure_to_data_uri
from fedecg.report.run_report import write_run_report

__all__ = ["HtmlPage", "figure_to_data_uri", "write_run_report"]
