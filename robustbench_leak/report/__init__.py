"""Leaderboard outputs beyond CSV and Markdown: JSON records, LaTeX, plots and the HTML page."""
