// Sluice console: draws the usage page's charts with the vendored uPlot. The numbers come
// from the chart element's data-chart attribute (the CSP allows no inline script); the table
// below each chart holds the same numbers as text, so nothing is lost without this script.
"use strict";
(() => {
  // Colours and dash patterns differ together, and the legend names each series: a series
  // is told apart without seeing colour.
  const COLOURS = ["#1f5fbf", "#c2410c", "#17663a", "#7c3aed", "#a3201c", "#0e7490", "#4b5563", "#a16207"];
  const DASHES = [[], [10, 5], [2, 4], [14, 4, 3, 4], [6, 3], [1, 2], [18, 6], [4, 8]];

  const utc = (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC");

  function draw(element) {
    const data = JSON.parse(element.dataset.chart);
    const target = element.querySelector(".chart-canvas");
    target.replaceChildren();
    const width = Math.max(target.clientWidth, 240);
    const series = data.series.map((s, i) => ({
      label: s.label,
      stroke: COLOURS[i % COLOURS.length],
      dash: DASHES[i % DASHES.length],
      width: 2,
      // Points help with a few buckets and clutter a week of hours.
      points: { show: data.x.length <= 60, size: 5 },
      value: (_, v) => (v == null ? "–" : v.toLocaleString("en")),
    }));
    const options = {
      width,
      height: width < 500 ? 220 : 280,
      tzDate: utc,
      series: [{ label: "UTC" }, ...series],
      axes: [{}, { size: 70, values: (_, ticks) => ticks.map((t) => t.toLocaleString("en")) }],
      scales: { y: { range: (_, min, max) => [0, Math.max(1, max * 1.1)] } },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    new uPlot(options, [data.x, ...data.series.map((s) => s.values)], target);
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (typeof uPlot === "undefined") return;
    document.querySelectorAll("[data-chart]").forEach((element) => {
      draw(element);
      // Drawn for the width the chart has: redraw when the layout gives it another one.
      let width = element.clientWidth;
      let pending;
      new ResizeObserver(() => {
        if (element.clientWidth === width) return;
        width = element.clientWidth;
        clearTimeout(pending);
        pending = setTimeout(() => draw(element), 100);
      }).observe(element);
    });
  });
})();
