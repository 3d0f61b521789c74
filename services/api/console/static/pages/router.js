// Pages by their address under /console/: each is a module with `render(root, context)`,
// loaded when its address is opened. The runs table (app.js) and the run page
// (run.js) keep their own addresses: `route` answers false for them.
const PAGES = {
  new: () => import("./new_run.js"),
  datasets: () => import("./datasets.js"),
  models: () => import("./models.js"),
  trainers: () => import("./trainers.js"),
  compare: () => import("./compare.js"),
  sweeps: () => import("./sweeps.js"),
};

export function pagePath() {
  return window.location.pathname.replace(/^\/console\/?/, "").split("/").filter(Boolean);
}

export async function route(me, root) {
  const [name, ...rest] = pagePath();
  const load = PAGES[name];
  root.hidden = !me || !load;
  if (!me || !load) return false;
  root.replaceChildren();
  const page = await load();
  await page.render(root, { me, rest, query: new URLSearchParams(window.location.search) });
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.getAttribute("href") === `/console/${name}`) a.setAttribute("aria-current", "page");
  });
  return true;
}
