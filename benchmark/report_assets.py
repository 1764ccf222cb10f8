"""The report's style sheet and script, inlined into the page (no file, server or network needed to view it).

The script sorts a table by the column whose header is clicked (numbers by value, text alphabetically, empty
cells last; a second click reverses), and shows a cell's provenance (its records, checkpoint sha256, settings)
in the panel under its table when the cell is clicked. It reads the provenance from the page's
`<script type="application/json" id="provenance">` block.
"""

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.note { color: #555; font-size: 0.92em; }
table.board { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
table.board th, table.board td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
table.board th { background: #f2f2f2; cursor: pointer; user-select: none; }
table.board th[aria-sort=ascending]::after { content: " \\25B2"; }
table.board th[aria-sort=descending]::after { content: " \\25BC"; }
table.board td.text { text-align: left; }
table.board td.cell { cursor: pointer; color: #0645ad; }
table.board td.cell:hover { background: #eef3ff; }
table.board td.flag { background: #fff3e0; }
tr.published td { font-style: italic; color: #555; }
.provenance { display: none; border: 1px solid #99b; background: #f8f9ff; padding: 0.6em 1em; margin: 0.5em 0; }
.provenance.open { display: block; }
.provenance pre { white-space: pre-wrap; font-size: 0.85em; margin: 0.3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
"""

JS = """
(function () {
  const provenance = JSON.parse(document.getElementById('provenance').textContent);
  function key(td) {
    const v = td.getAttribute('data-sort');
    if (v === null || v === '') return null;
    const n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  document.querySelectorAll('table.board').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (th, col) {
      th.addEventListener('click', function () {
        const ascending = th.getAttribute('aria-sort') !== 'ascending';
        table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort(function (a, b) {
          const x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === null && y === null) return 0;
          if (x === null) return 1;
          if (y === null) return -1;
          const c = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    table.querySelectorAll('td.cell').forEach(function (td) {
      td.addEventListener('click', function () {
        const panel = document.getElementById(table.getAttribute('data-panel'));
        const p = provenance[td.getAttribute('data-cell')];
        panel.innerHTML = '';
        const h = document.createElement('h3');
        h.textContent = p.title;
        panel.appendChild(h);
        const pre = document.createElement('pre');
        pre.textContent = p.text;
        panel.appendChild(pre);
        panel.classList.add('open');
        panel.setAttribute('data-shown', td.getAttribute('data-cell'));
      });
    });
  });
})();
"""
