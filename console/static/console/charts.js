/* Usage charts: Chart.js draws each chart's figures (the page's JSON data blocks, written by
   console/_chart.html). Without scripts the figures stay readable as each chart's table. */
(function () {
  "use strict";
  function draw(canvas) {
    if (typeof Chart === "undefined" || Chart.getChart(canvas)) { return; }
    var block = document.getElementById(canvas.getAttribute("data-chart"));
    if (!block) { return; }
    var series = JSON.parse(block.textContent);
    var style = getComputedStyle(canvas);
    canvas.parentElement.hidden = false;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: series.dates,
        datasets: [{
          label: series.title,
          data: series.values,
          backgroundColor: style.getPropertyValue("--chart-bar").trim() || "#2563eb",
          hoverBackgroundColor: style.getPropertyValue("--chart-bar-hover").trim() || "#1e40af",
        }],
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: {
          x: { ticks: { maxTicksLimit: 6, maxRotation: 0 }, grid: { display: false } },
          y: { beginAtZero: true, ticks: { precision: 0 } },
        },
      },
    });
  }
  function drawAll(root) {
    root.querySelectorAll("canvas[data-chart]").forEach(draw);
  }
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawAll(event.target); });
})();
