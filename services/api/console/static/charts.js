// Chart helpers every console page uses: ECharts, served by the gateway from the npm package that
// scripts/setup.sh installs (never a CDN), line charts of series and the confusion matrix heat map.
// ECharts' aria option writes a text description of each chart for screen readers.
// Absolute: pages live at deeper paths too (/console/sweeps/<id>).
const ECHARTS_URL = "/console/vendor/echarts.min.js";
let loading = null;

/** The ECharts global, loaded once: its dist file is a UMD script, not an ES module. */
export function loadECharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = ECHARTS_URL;
      script.onload = () => resolve(window.echarts);
      script.onerror = () => { loading = null; reject(new Error(`charting library missing at ${ECHARTS_URL}`)); };
      document.head.append(script);
    });
  }
  return loading;
}

// Each chart follows its own box, not the window: a box also changes width when a scroll bar comes or
// goes, or a media query applies, and a chart left at its old width makes the page wider than a phone.
const boxes = new ResizeObserver((entries) => {
  for (const entry of entries) window.echarts?.getInstanceByDom(entry.target)?.resize();
});

/** An ECharts instance on `element`, made once and reused, so later data only updates it. */
async function chartOn(element) {
  const echarts = await loadECharts();
  let chart = echarts.getInstanceByDom(element);
  if (!chart) {
    chart = echarts.init(element, null, { renderer: "canvas" });
    boxes.observe(element);
  }
  return chart;
}

/** Forget the charts inside `container` (a page being left). */
export function disposeCharts(container) {
  if (!window.echarts) return;
  for (const element of container.querySelectorAll(".chart")) {
    const chart = window.echarts.getInstanceByDom(element);
    boxes.unobserve(element);
    if (chart) chart.dispose();
  }
}

/**
 * A line chart: `series` is a list of {name, points: [[x, y], ...]}; null y values are gaps.
 * `element.dataset.points` carries the number of points drawn, for tests and scripts.
 */
export async function lineChart(element, { title, xName, yName, series }) {
  const chart = await chartOn(element);
  chart.setOption({
    aria: { enabled: true },
    title: { text: title, textStyle: { fontSize: 14 } },
    tooltip: { trigger: "axis" },
    legend: { top: 24, type: "scroll" },
    grid: { top: 64, left: 48, right: 16, bottom: 40, containLabel: true },
    xAxis: { type: "value", name: xName, nameLocation: "middle", nameGap: 26, minInterval: 1 },
    yAxis: { type: "value", name: yName, scale: true },
    // Markers as well as colours tell the series apart.
    series: series.map((line, index) => ({
      name: line.name, type: "line", data: line.points, showSymbol: line.points.length < 60,
      symbol: ["circle", "triangle", "rect", "diamond", "pin"][index % 5], connectNulls: false,
    })),
  }, { notMerge: true });
  element.dataset.points = String(series.reduce((sum, line) => sum + line.points.length, 0));
  return chart;
}

/**
 * The confusion matrix as a heat map: rows are the ground truth, columns the prediction, both with
 * Background last (as the API serves them). Every cell shows its count as text, never colour alone;
 * `element.dataset.cells` holds the counts row by row.
 */
export async function heatMap(element, { title, classes, matrix }) {
  const chart = await chartOn(element);
  const cells = [];
  let largest = 0;
  matrix.forEach((row, truth) => row.forEach((count, predicted) => {
    cells.push([predicted, truth, count]);
    largest = Math.max(largest, count);
  }));
  chart.setOption({
    aria: { enabled: true },
    // Drawn at once: counts appear with the cells, not after an animation.
    animation: false,
    title: { text: title, subtext: "rows: ground truth · columns: predicted", textStyle: { fontSize: 14 } },
    tooltip: { formatter: (p) => `truth ${classes[p.value[1]]}, predicted ${classes[p.value[0]]}: ${p.value[2]}` },
    grid: { top: 56, left: 8, right: 8, bottom: 48, containLabel: true },
    xAxis: { type: "category", data: classes, axisLabel: { interval: 0, rotate: classes.length > 4 ? 30 : 0 } },
    yAxis: { type: "category", data: classes, inverse: true, axisLabel: { interval: 0 } },
    visualMap: { min: 0, max: Math.max(largest, 1), calculable: false, orient: "horizontal", left: "center",
                 bottom: 0, itemHeight: 120, inRange: { color: ["#f7fbff", "#08306b"] } },
    series: [{ type: "heatmap", data: cells, label: { show: true, formatter: (p) => String(p.value[2]) },
               emphasis: { itemStyle: { borderWidth: 1 } } }],
  }, { notMerge: true });
  element.dataset.cells = JSON.stringify(matrix);
  return chart;
}
