// Injected into a copy of report.html by tests/load_gateway.rs and run by headless Chromium:
// measures what each chart section actually drew and writes it as JSON into <pre id="render-check">.
const out = {};
for (const sec of document.querySelectorAll('section.chart')) {
  const svgs = sec.querySelectorAll('svg');
  let lines = 0, tall = 0, bars = 0, width = 0;
  for (const svg of svgs) {
    width = Math.max(width, svg.getBoundingClientRect().width);
    for (const el of svg.querySelectorAll('polyline')) {
      // Black polylines are axes and ticks; data series are coloured and span the x range.
      const stroke = (el.getAttribute('stroke') || '').toUpperCase();
      const b = el.getBBox();
      if (stroke !== '#000000' && b.width > 40) lines++;
      if (stroke !== '#000000' && b.width > 40 && b.height > 20) tall++;
    }
    for (const el of svg.querySelectorAll('rect')) {
      const fill = (el.getAttribute('fill') || '').toUpperCase();
      const b = el.getBBox();
      if (fill !== '#FFFFFF' && fill !== 'NONE' && b.width > 0 && b.height > 0) bars++;
    }
  }
  out[sec.id] = { svgs: svgs.length, lines, tall, bars, width: Math.round(width) };
}
const pre = document.createElement('pre');
pre.id = 'render-check';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
