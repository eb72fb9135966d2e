// podnet topology page: follows /podnet/ui/events (Server-Sent Events) and draws the cluster.
//
// Shape of the work: every message is parsed and queued; one flush per animation frame applies
// the queue to the model (Maps keyed like the server's entities), then updates only the SVG
// elements of the keys that changed. Positions are recomputed by a cheap layout pass that
// touches an element only when its place actually moved, so a patch for one pod costs one tile.
'use strict';

(() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const BASE = '/podnet/ui/';
  const KINDS = ['nodes', 'pods', 'services', 'policies', 'faults'];
  const MAX_FLOWS = 1000;          // the server's FlowTable keeps as many
  const MAX_VISIBLE_ROWS = 200;    // rows in the table at once (the rest are counted)
  const STALE_MS = 20000;          // links come every second: silence this long means down
  const PROXY_KEY = '@controlplane';
  // `podnet logs --verdict` aliases (podnet/logview.py VERDICT_ALIASES).
  const VERDICT_ALIASES = {
    refused: ['refused', 'econnrefused'],
    unreachable: ['unreachable', 'ehostunreach', 'enetunreach'],
    reset: ['reset', 'econnreset'],
    dropped: ['dropped'],
    denied: ['denied'], deny: ['denied'],
    allowed: ['allowed'], allow: ['allowed'],
  };
  // Verdicts that mean the flow stopped there (podnet/cli/flowstory.py's failed words).
  const BAD_VERDICT = /denied|refus|unreach|reset|drop|fail|timeout|etimedout|no reply/;
  const SERVICE_COLOURS = ['#2563eb', '#9333ea', '#db2777', '#0891b2', '#65a30d', '#c2410c',
    '#4f46e5', '#0d9488', '#a16207', '#be123c'];
  // Pod tiles: three densities so 300 pods on 3 nodes still fit on a screen.
  const TILE = {
    full: { w: 150, h: 42, gap: 8, nameFont: 7.3 },
    compact: { w: 96, h: 30, gap: 5, nameFont: 6.1 },
    dense: { w: 16, h: 16, gap: 4, nameFont: 0 },
  };
  const M = 16;                    // outer margin
  const NODE_PAD = 12;
  const NODE_HEAD = 54;
  const TAG_H = 22;
  const BAND_BOX = { w: 212, h: 58, gap: 12 };
  const PROXY_BOX = { w: 188, h: 58 };

  const $ = (id) => document.getElementById(id);
  // Pane sizes, read once now (before anything is drawn) and then kept by a ResizeObserver.
  const sizes = {
    topoW: document.getElementById('topology-scroll').clientWidth,
    topoH: document.getElementById('topology-scroll').clientHeight,
    linksW: document.getElementById('link-cards').clientWidth,
    linksH: document.getElementById('link-cards').clientHeight,
  };
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

  // ---- model ---------------------------------------------------------------------------------
  const model = {
    nodes: new Map(), pods: new Map(), services: new Map(), policies: new Map(),
    faults: new Map(),
    flows: new Map(),          // id -> row
    flowStats: {}, links: [], server: {},
  };
  const dirty = {
    nodes: new Set(), pods: new Set(), services: new Set(), policies: new Set(),
    faults: new Set(), layout: true, flows: false, flowStats: false, links: false,
    summary: true, updated: null, topologyUpdated: null,
  };

  // ---- svg helpers ---------------------------------------------------------------------------
  function svg(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function setA(e, k, v) {
    const s = String(v);
    if (e.getAttribute(k) !== s) e.setAttribute(k, s);
  }
  function setT(e, t) {
    if (e.textContent !== t) e.textContent = t;
  }
  // Arrays from the server, or an empty one (a malformed field must not stop the page).
  const arr = (x) => (Array.isArray(x) ? x : []);
  function clip(s, n) {
    s = s === null || s === undefined ? '' : String(s);
    if (n <= 1) return '';
    return s.length > n ? s.slice(0, n - 1) + '…' : s;
  }
  function hash(s) {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
    return Math.abs(h);
  }
  const svcColour = (key) => SERVICE_COLOURS[hash(key) % SERVICE_COLOURS.length];
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

  // ---- the topology svg: fixed layers --------------------------------------------------------
  const root = $('topology');
  const defs = svg('defs', null, root);
  defs.innerHTML =
    '<pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">' +
    '<rect width="8" height="8" fill="none"/><line x1="0" y1="0" x2="0" y2="8" class="hatch-line"/></pattern>' +
    '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">' +
    '<path d="M0 0 L10 5 L0 10 z" class="arrow-head"/></marker>';
  const layerBand = svg('g', { id: 'layer-band' }, root);
  const layerNodes = svg('g', { id: 'layer-nodes' }, root);
  const layerEdges = svg('g', { id: 'layer-edges' }, root);
  const layerMarkers = svg('g', { id: 'layer-markers' }, root);
  const layerFlow = svg('g', { id: 'layer-flow' }, root);

  const els = {
    nodes: new Map(), pods: new Map(), services: new Map(), policies: new Map(),
    faults: new Map(), edges: new Map(),
  };
  let unscheduled = null;   // a box for pods with no node yet (not a node: no data-node)
  let proxyEl = null;
  let metrics = { mode: 'full', tileW: TILE.full.w, width: 0 };
  let positions = { pods: new Map(), nodes: new Map(), services: new Map(), proxy: null };

  function makeProxy() {
    const g = svg('g', { class: 'proxy', 'data-node': PROXY_KEY }, layerBand);
    svg('rect', { class: 'box', width: PROXY_BOX.w, height: PROXY_BOX.h, rx: 10 }, g);
    const t1 = svg('text', { x: 14, y: 23, class: 'title' }, g);
    t1.textContent = 'control-plane proxy';
    const t2 = svg('text', { x: 14, y: 42, class: 'sub' }, g);
    t2.textContent = PROXY_KEY;
    svg('title', null, g).textContent =
      'The control plane\'s proxy: a connection to a ClusterIP goes through it to one ready endpoint.';
    return g;
  }
  proxyEl = makeProxy();

  // ---- nodes ---------------------------------------------------------------------------------
  function nodeEl(key) {
    let n = els.nodes.get(key);
    if (n) return n;
    const g = svg('g', { class: 'node', 'data-node': key }, layerNodes);
    n = {
      g,
      box: svg('rect', { class: 'box', rx: 12 }, g),
      hatch: svg('rect', { class: 'hatch', rx: 12, fill: 'url(#hatch)' }, g),
      name: svg('text', { x: NODE_PAD, y: 22, class: 'title' }, g),
      pill: svg('g', { class: 'pill' }, g),
      cidr: svg('text', { x: NODE_PAD, y: 42, class: 'cidr' }, g),
      count: svg('text', { y: 42, class: 'count', 'text-anchor': 'end' }, g),
      empty: svg('text', { x: NODE_PAD, class: 'empty-note' }, g),
      pods: svg('g', { class: 'pods' }, g),
      tip: svg('title', null, g),
      x: null, y: null, w: null, h: null,
    };
    n.pillBox = svg('rect', { rx: 8, height: 16, y: 9 }, n.pill);
    n.pillText = svg('text', { y: 21 }, n.pill);
    n.g.addEventListener('click', (ev) => {
      if (ev.target.closest('.pod')) return;
      setFilter('flow-filter-node', key);
    });
    els.nodes.set(key, n);
    return n;
  }

  function updateNode(key) {
    const node = model.nodes.get(key);
    const n = els.nodes.get(key);
    if (!node) {
      if (n) {
        // Its pods (if any are left) move to the unscheduled box in the layout pass.
        n.g.remove();
        els.nodes.delete(key);
      }
      return;
    }
    const e = nodeEl(key);
    const gossip = node.gossip || 'unknown';
    const ready = node.ready !== false;
    setA(e.g, 'data-gossip', gossip);
    setA(e.g, 'data-ready', ready ? 'true' : 'false');
    setT(e.name, node.name || key);
    // The agent's address only where the box is wide enough (it is in the tooltip anyway).
    const cidrs = arr(node.podCIDRs).length ? arr(node.podCIDRs).join(' · ') : node.podCIDR;
    e.cidrShort = cidrs || 'no podCIDR yet';
    e.cidrFull = e.cidrShort + (node.address ? '  ·  ' + node.address : '');
    const state = gossip + (ready ? '' : ' · NotReady');
    setT(e.pillText, state);
    const seen = node.seenBy && Object.keys(node.seenBy).length
      ? Object.entries(node.seenBy).map(([k, v]) => `  ${k} sees it ${v}`).join('\n')
      : '  no other agent reported it yet';
    const routes = arr(node.routes).map((r) => `  ${r.podCIDR} -> ${r.node} (${r.state})`).join('\n');
    setT(e.tip, `${node.name || key}: ${gossip}${ready ? ', Ready' : ', NotReady'}\n` +
      `podCIDR ${cidrs || '-'}  address ${node.address || '-'}\n` +
      `gossip (SWIM):\n${seen}` + (routes ? `\nroute table:\n${routes}` : ''));
    e.pillW = 14 + state.length * 6.3;
  }

  function unschedBox() {
    if (unscheduled) return unscheduled;
    const g = svg('g', { class: 'unscheduled' }, layerNodes);
    unscheduled = {
      g,
      box: svg('rect', { class: 'box', rx: 12 }, g),
      name: svg('text', { x: NODE_PAD, y: 22, class: 'title' }, g),
      cidr: svg('text', { x: NODE_PAD, y: 42, class: 'cidr' }, g),
      pods: svg('g', { class: 'pods' }, g),
      x: null, y: null, w: null, h: null,
    };
    unscheduled.name.textContent = 'not scheduled';
    unscheduled.cidr.textContent = 'pods waiting for a node';
    return unscheduled;
  }

  // ---- pods ----------------------------------------------------------------------------------
  function podEl(key) {
    let p = els.pods.get(key);
    if (p) return p;
    const g = svg('g', { class: 'pod', 'data-pod': key });
    p = {
      g,
      box: svg('rect', { class: 'tile', rx: 5 }, g),
      stripe: svg('rect', { class: 'stripe', x: 0, y: 0, width: 4, rx: 2 }, g),
      name: svg('text', { class: 'pname' }, g),
      ip: svg('text', { class: 'pip' }, g),
      phase: svg('text', { class: 'pphase', 'text-anchor': 'end' }, g),
      tip: svg('title', null, g),
      x: null, y: null, mode: null, parent: null,
    };
    g.addEventListener('click', () => setFilter('flow-filter-pod', key));
    els.pods.set(key, p);
    return p;
  }

  function updatePod(key) {
    const pod = model.pods.get(key);
    let p = els.pods.get(key);
    if (!pod) {
      if (p) { p.g.remove(); els.pods.delete(key); }
      return;
    }
    p = podEl(key);
    const phase = pod.phase || 'Unknown';
    setA(p.g, 'data-ip', pod.ip || '');
    setA(p.g, 'data-phase', phase);
    setA(p.g, 'data-ready', pod.ready ? 'true' : 'false');
    setA(p.g, 'data-node-name', pod.node || '');
    // The layout pass puts the tile in its node's box (or the unscheduled box).
    const labels = pod.labels ? Object.entries(pod.labels).map(([k, v]) => `${k}=${v}`).join(', ') : '';
    setT(p.tip, `${key}\nIP ${pod.ip || '(none yet)'} · ${phase}${pod.ready ? ', ready' : ', not ready'}` +
      `\nnode ${pod.node || '(not scheduled)'}` + (labels ? `\nlabels ${labels}` : '') +
      '\nclick: show its flows');
    p.mode = null;  // texts are re-fitted to the tile by the layout pass
  }

  function fitPod(key, p) {
    const pod = model.pods.get(key);
    if (!pod) return;
    const mode = metrics.mode;
    const t = TILE[mode];
    const w = metrics.tileW;
    setA(p.box, 'width', w); setA(p.box, 'height', t.h);
    setA(p.stripe, 'height', t.h);
    const phase = pod.phase || 'Unknown';
    if (mode === 'full') {
      setA(p.name, 'x', 10); setA(p.name, 'y', 17);
      setA(p.ip, 'x', 10); setA(p.ip, 'y', 33);
      setA(p.phase, 'x', w - 8); setA(p.phase, 'y', 33);
      const room = Math.floor((w - 18) / t.nameFont);
      setT(p.name, clip(pod.name || key, room));
      setT(p.ip, pod.ip || 'no IP');
      setT(p.phase, pod.ready || phase !== 'Running' ? phase : phase + ' ·');
    } else {
      setA(p.name, 'x', 8); setA(p.name, 'y', 12.5);
      setA(p.ip, 'x', 8); setA(p.ip, 'y', 24.5);
      setA(p.phase, 'x', w - 5); setA(p.phase, 'y', 12.5);
      setT(p.name, clip(pod.name || key, Math.floor((w - 12) / (t.nameFont || 6))));
      setT(p.ip, pod.ip || 'no IP');
      setT(p.phase, phase);
    }
    p.mode = mode;
    p.w = w;
  }

  // ---- services and edges --------------------------------------------------------------------
  function updateService(key) {
    const s = model.services.get(key);
    let e = els.services.get(key);
    if (!s) {
      if (e) { e.g.remove(); els.services.delete(key); }
      return;
    }
    if (!e) {
      const g = svg('g', { class: 'service', 'data-service': key }, layerBand);
      e = {
        g,
        box: svg('rect', { class: 'box', width: BAND_BOX.w, height: BAND_BOX.h, rx: 10 }, g),
        stripe: svg('rect', { class: 'stripe', width: 5, height: BAND_BOX.h, rx: 2 }, g),
        name: svg('text', { x: 14, y: 19, class: 'title' }, g),
        ip: svg('text', { x: 14, y: 35, class: 'sip' }, g),
        eps: svg('text', { x: 14, y: 50, class: 'seps' }, g),
        tip: svg('title', null, g),
        x: null, y: null,
      };
      g.addEventListener('mouseenter', () => focusService(key, true));
      g.addEventListener('mouseleave', () => focusService(key, false));
      els.services.set(key, e);
    }
    const colour = svcColour(key);
    setA(e.stripe, 'fill', colour);
    setA(e.g, 'data-cluster-ip', s.clusterIP || '');
    setA(e.g, 'style', `--svc:${colour}`);
    setT(e.name, clip(s.name || key, 28));
    const ports = arr(s.ports).join(', ');
    setT(e.ip, clip(`${s.clusterIP || 'None'}${ports ? '  ' + ports : ''}`, 32));
    const eps = arr(s.endpoints);
    const ready = eps.filter((x) => x.ready).length;
    const kind = s.type && s.type !== 'ClusterIP' ? ` · ${s.type}` : '';
    // kube-dns has no pods here: the control plane's DNS server answers its ClusterIP itself.
    const builtin = key === 'kube-system/kube-dns' && eps.length === 0;
    setT(e.eps, (eps.length ? `${ready}/${eps.length} endpoints ready`
      : builtin ? 'answered by the control plane' : 'no endpoints') + kind);
    setA(e.g, 'data-ready-endpoints', ready);
    setA(e.eps, 'class', 'seps' + (builtin ? '' : eps.length === 0 ? ' empty' : ready === 0 ? ' none' : ''));
    setT(e.tip, `Service ${key} (${s.type || 'ClusterIP'})\nClusterIP ${s.clusterIP || 'None'}  ports ${ports || '-'}\n` +
      (eps.length ? eps.map((x) => `  ${x.ip} ${x.pod || '(no pod)'} on ${x.node || '?'} ${x.ready ? 'ready' : 'not ready'}`).join('\n')
        : builtin ? '  the control plane\'s DNS server answers this ClusterIP (UDP and TCP 53)' : '  no endpoints'));
  }

  function focusService(key, on) {
    root.classList.toggle('focus', on);
    const e = els.services.get(key);
    if (e) e.g.classList.toggle('hl', on);
    for (const [k, path] of els.edges) if (k.startsWith(key + '|')) path.classList.toggle('hl', on);
  }

  function layoutEdges() {
    const want = new Set();
    for (const [key, s] of model.services) {
      const sp = positions.services.get(key);
      if (!sp) continue;
      const colour = svcColour(key);
      const sx = sp.x + BAND_BOX.w / 2;
      const sy = sp.y + BAND_BOX.h;
      for (const ep of arr(s.endpoints)) {
        if (!ep.ready || !ep.pod) continue;
        const pp = positions.pods.get(ep.pod);
        if (!pp) continue;
        const k = key + '|' + ep.pod;
        if (want.has(k)) continue;
        want.add(k);
        let path = els.edges.get(k);
        if (!path) {
          path = svg('path', { class: 'svc-edge', 'data-service': key, 'data-pod': ep.pod }, layerEdges);
          els.edges.set(k, path);
        }
        const px = pp.x + pp.w / 2;
        const py = pp.y;
        const bend = Math.max(30, (py - sy) * 0.45);
        setA(path, 'd', `M${r(sx)} ${r(sy)} C${r(sx)} ${r(sy + bend)} ${r(px)} ${r(py - bend)} ${r(px)} ${r(py)}`);
        setA(path, 'stroke', colour);
      }
    }
    for (const [k, path] of els.edges) {
      if (!want.has(k)) { path.remove(); els.edges.delete(k); }
    }
  }
  const r = (v) => Math.round(v * 10) / 10;

  // ---- policies and faults: tags in a node's tag row plus outlines on what they touch ------
  function markerPlan() {
    // node key -> [{kind, key, label}], in a stable order; markers with no node go in the band.
    const byNode = new Map();
    const band = [];
    const add = (node, m) => {
      if (node && model.nodes.has(node)) {
        if (!byNode.has(node)) byNode.set(node, []);
        byNode.get(node).push(m);
      } else band.push(m);
    };
    const sorted = (m) => Array.from(m.keys()).sort(collator.compare);
    for (const key of sorted(model.policies)) {
      const pol = model.policies.get(key);
      // The node holding most of the pods it selects.
      const tally = new Map();
      for (const pk of arr(pol.selects)) {
        const pod = model.pods.get(pk);
        if (pod && pod.node) tally.set(pod.node, (tally.get(pod.node) || 0) + 1);
      }
      let best = null;
      for (const [n, c] of tally) if (best === null || c > tally.get(best)) best = n;
      add(best, { kind: 'policy', key, label: pol.name || key });
    }
    for (const key of sorted(model.faults)) {
      const f = model.faults.get(key);
      let node = arr(f.nodes).find((n) => model.nodes.has(n)) || null;
      if (!node) {
        const pod = arr(f.pods).map((k) => model.pods.get(k)).find((p) => p && p.node);
        node = pod ? pod.node : null;
      }
      add(node, { kind: 'fault', key, label: f.name || key });
    }
    return { byNode, band };
  }
  const tagWidth = (label) => 28 + label.length * 6.4;
  // Marker icons drawn as paths (no font is guaranteed to have a shield glyph).
  const SHIELD = 'M10 3.2 L15 5 V8.6 C15 11.6 12.9 13.6 10 14.8 C7.1 13.6 5 11.6 5 8.6 V5 Z';
  const BOLT = 'M11.2 3 L6 10 H9.4 L8.6 15 L14 7.8 H10.5 Z';

  function placeTags(list, width) {
    // Greedy rows of tags; returns placements relative to the row origin and the row count.
    let x = 0; let row = 0;
    const out = [];
    for (const m of list) {
      const w = Math.min(tagWidth(m.label), width);
      if (x > 0 && x + w > width) { x = 0; row += 1; }
      out.push({ m, x, row, w });
      x += w + 6;
    }
    return { out, rows: list.length ? row + 1 : 0 };
  }

  function markerEl(kind, key) {
    const map = kind === 'policy' ? els.policies : els.faults;
    let e = map.get(key);
    if (e) return e;
    const g = svg('g', { class: kind, ['data-' + kind]: key }, layerMarkers);
    e = {
      g,
      outlines: svg('g', { class: 'outlines' }, g),
      tag: svg('g', { class: 'tag' }, g),
      tip: null,
    };
    e.tagBox = svg('rect', { rx: 9, height: 18 }, e.tag);
    svg('path', { class: 'icon', d: kind === 'policy' ? SHIELD : BOLT }, e.tag);
    e.tagText = svg('text', { x: 20, y: 13 }, e.tag);
    e.tip = svg('title', null, e.tag);
    g.addEventListener('mouseenter', () => g.classList.add('hl'));
    g.addEventListener('mouseleave', () => g.classList.remove('hl'));
    map.set(key, e);
    return e;
  }

  function drawMarker(kind, key, place, absX, absY) {
    const e = markerEl(kind, key);
    setA(e.tag, 'transform', `translate(${r(absX)},${r(absY)})`);
    setA(e.tagBox, 'width', r(place.w));
    setT(e.tagText, clip(place.m.label, Math.floor((place.w - 26) / 6.4)));
    // Outlines on the pods (policy: selected pods; fault: target pods and nodes).
    const boxes = [];
    if (kind === 'policy') {
      const pol = model.policies.get(key);
      setT(e.tip, `NetworkPolicy ${key} (${arr(pol.types).join(', ') || 'Ingress'})\n${pol.summary || ''}\n` +
        `selects ${arr(pol.selects).length} pod(s): ${arr(pol.selects).slice(0, 12).join(', ')}` +
        (arr(pol.selects).length > 12 ? ', …' : ''));
      for (const pk of arr(pol.selects)) {
        const pp = positions.pods.get(pk);
        if (pp) boxes.push([pp.x - 2, pp.y - 2, pp.w + 4, pp.h + 4, 6]);
      }
    } else {
      const f = model.faults.get(key);
      setT(e.tip, `NetworkFault ${f.name || key}\n${f.summary || ''}` +
        (f.expires ? `\nexpires ${f.expires}` : '\nno expiry'));
      for (const nk of arr(f.nodes)) {
        const np = positions.nodes.get(nk);
        if (np) boxes.push([np.x - 3, np.y - 3, np.w + 6, np.h + 6, 14]);
      }
      for (const pk of arr(f.pods)) {
        const pp = positions.pods.get(pk);
        if (pp) boxes.push([pp.x - 3, pp.y - 3, pp.w + 6, pp.h + 6, 7]);
      }
    }
    const kids = e.outlines.children;
    while (kids.length > boxes.length) kids[kids.length - 1].remove();
    boxes.forEach((b, i) => {
      const rect = kids[i] || svg('rect', null, e.outlines);
      setA(rect, 'x', r(b[0])); setA(rect, 'y', r(b[1]));
      setA(rect, 'width', r(b[2])); setA(rect, 'height', r(b[3])); setA(rect, 'rx', b[4]);
    });
  }

  // ---- layout --------------------------------------------------------------------------------
  function podsByNode() {
    const groups = new Map();
    for (const k of model.nodes.keys()) groups.set(k, []);
    const loose = [];
    for (const [k, p] of model.pods) {
      if (p.node && groups.has(p.node)) groups.get(p.node).push(k);
      else loose.push(k);
    }
    for (const list of groups.values()) list.sort(collator.compare);
    loose.sort(collator.compare);
    return { groups, loose };
  }

  function layout() {
    const scroll = $('topology-scroll');
    const W = Math.max(640, sizes.topoW - 2);
    const { groups, loose } = podsByNode();
    const plan = markerPlan();

    // The band: the proxy, then the Services in rows, then markers with no node.
    setA(proxyEl, 'transform', `translate(${M},${M})`);
    positions.proxy = { x: M, y: M, w: PROXY_BOX.w, h: PROXY_BOX.h };
    const bandX0 = M + PROXY_BOX.w + 28;
    const perRow = Math.max(1, Math.floor((W - bandX0 - M + BAND_BOX.gap) / (BAND_BOX.w + BAND_BOX.gap)));
    const svcKeys = Array.from(model.services.keys()).sort(collator.compare);
    positions.services = new Map();
    svcKeys.forEach((key, i) => {
      const x = bandX0 + (i % perRow) * (BAND_BOX.w + BAND_BOX.gap);
      const y = M + Math.floor(i / perRow) * (BAND_BOX.h + BAND_BOX.gap);
      positions.services.set(key, { x, y });
      const e = els.services.get(key);
      if (e && (e.x !== x || e.y !== y)) { setA(e.g, 'transform', `translate(${x},${y})`); e.x = x; e.y = y; }
    });
    const svcRows = Math.max(1, Math.ceil(svcKeys.length / perRow));
    let bandBottom = M + svcRows * (BAND_BOX.h + BAND_BOX.gap) - BAND_BOX.gap;
    const bandTags = placeTags(plan.band, W - 2 * M);
    const bandTagY = bandBottom + 10;
    if (bandTags.rows) bandBottom = bandTagY + bandTags.rows * TAG_H;

    // Node columns.
    const boxes = Array.from(model.nodes.keys()).sort(collator.compare);
    const hasLoose = loose.length > 0;
    const nBoxes = boxes.length + (hasLoose ? 1 : 0);
    const gapX = 18;
    // Columns for the nodes; the unscheduled box takes a free slot or starts the next row.
    const cols = Math.max(1, Math.min(boxes.length || nBoxes || 1, Math.floor((W - 2 * M + gapX) / (230 + gapX))));
    const colW = (W - 2 * M - gapX * (cols - 1)) / cols;
    const inner = colW - 2 * NODE_PAD;
    let most = loose.length;
    for (const list of groups.values()) most = Math.max(most, list.length);
    // The densest mode only when the roomier one would not fit in about a screen.
    let mode = 'full';
    const fit = (m) => {
      const t = TILE[m];
      const c = Math.max(1, Math.floor((inner + t.gap) / (t.w + t.gap)));
      return { c, h: Math.ceil(most / c) * (t.h + t.gap) };
    };
    const full = fit('full');
    const compact = fit('compact');
    // A long single file of big tiles reads worse than two columns of small ones.
    if (full.h > 520 || (full.c === 1 && compact.c >= 2 && most > 6)) {
      mode = compact.h > 560 ? 'dense' : 'compact';
    }
    const t = TILE[mode];
    const perLine = Math.max(1, Math.floor((inner + t.gap) / (t.w + t.gap)));
    // Full and compact tiles stretch to fill the column; dense ones stay square.
    const tileW = mode === 'dense' ? t.w : Math.floor((inner - t.gap * (perLine - 1)) / perLine);
    const remetric = metrics.mode !== mode || metrics.tileW !== tileW;
    metrics = { mode, tileW, width: W };
    setA(root, 'class', 'mode-' + mode + (root.classList.contains('focus') ? ' focus' : ''));

    positions.pods = new Map();
    positions.nodes = new Map();
    const nodeTop = bandBottom + 70;   // room for the service lines to fan out
    let rowY = nodeTop;
    let rowH = 0;
    const placeBox = (i, e, podKeys, tags) => {
      const col = i % cols;
      if (col === 0 && i > 0) { rowY += rowH + 22; rowH = 0; }
      const x = M + col * (colW + gapX);
      const y = rowY;
      const tagRows = tags ? tags.rows : 0;
      const gridTop = NODE_HEAD + tagRows * TAG_H + (tagRows ? 4 : 0);
      const lines = Math.ceil(podKeys.length / perLine);
      const h = Math.max(gridTop + lines * (t.h + t.gap) + NODE_PAD - t.gap + 2, 110);
      rowH = Math.max(rowH, h);
      if (e.x !== x || e.y !== y) { setA(e.g, 'transform', `translate(${r(x)},${y})`); e.x = x; e.y = y; }
      if (e.w !== colW || e.h !== h) {
        setA(e.box, 'width', r(colW)); setA(e.box, 'height', r(h));
        if (e.hatch) { setA(e.hatch, 'width', r(colW)); setA(e.hatch, 'height', r(h)); }
        e.w = colW; e.h = h;
      }
      if (e.cidrFull) setT(e.cidr, colW < 340 ? e.cidrShort : e.cidrFull);
      if (e.count) {
        setA(e.count, 'x', r(colW - NODE_PAD));
        setT(e.count, `${podKeys.length} pod${podKeys.length === 1 ? '' : 's'}`);
      }
      if (e.pill) {
        setA(e.pill, 'transform', `translate(${r(colW - NODE_PAD - e.pillW)},0)`);
        setA(e.pillBox, 'width', r(e.pillW));
        setA(e.pillText, 'x', r(e.pillW / 2));
      }
      if (e.empty) {
        setA(e.empty, 'y', gridTop + 24);
        setT(e.empty, podKeys.length ? '' : 'no pods');
      }
      podKeys.forEach((pk, j) => {
        const p = els.pods.get(pk);
        if (!p) return;
        if (p.g.parentNode !== e.pods) e.pods.appendChild(p.g);
        if (remetric || p.mode !== mode) fitPod(pk, p);
        const px = NODE_PAD + (j % perLine) * (tileW + t.gap);
        const py = gridTop + Math.floor(j / perLine) * (t.h + t.gap);
        if (p.x !== px || p.y !== py) { setA(p.g, 'transform', `translate(${px},${py})`); p.x = px; p.y = py; }
        positions.pods.set(pk, { x: x + px, y: y + py, w: tileW, h: t.h });
      });
      return { x, y, w: colW, h, gridTop };
    };
    boxes.forEach((key, i) => {
      const e = nodeEl(key);
      const tags = placeTags(plan.byNode.get(key) || [], inner);
      const pos = placeBox(i, e, groups.get(key) || [], tags);
      positions.nodes.set(key, pos);
      for (const tg of tags.out) {
        drawMarker(tg.m.kind, tg.m.key, tg, pos.x + NODE_PAD + tg.x, pos.y + NODE_HEAD - 4 + tg.row * TAG_H);
      }
    });
    if (hasLoose) {
      placeBox(boxes.length, unschedBox(), loose, null);
    } else if (unscheduled) {
      unscheduled.g.remove();
      unscheduled = null;
    }
    for (const tg of bandTags.out) {
      drawMarker(tg.m.kind, tg.m.key, tg, M + tg.x, bandTagY + tg.row * TAG_H);
    }
    // Markers of policies and faults that are gone.
    for (const [map, src] of [[els.policies, model.policies], [els.faults, model.faults]]) {
      for (const [k, e] of map) if (!src.has(k)) { e.g.remove(); map.delete(k); }
    }
    // At least the visible height, so the floating hop legend always has room.
    contentBottom = rowY + rowH;
    const H = Math.max(rowY + rowH + M + 10, sizes.topoH - 4);
    setA(root, 'viewBox', `0 0 ${W} ${r(H)}`);
    setA(root, 'width', W);
    setA(root, 'height', r(H));
    layoutEdges();
    if (currentPath) drawPath(currentPath);
    $('topology-empty').hidden = model.nodes.size > 0 || model.pods.size > 0;
  }

  // ---- flow path -----------------------------------------------------------------------------
  let currentPath = null;   // the last fetched detail, redrawn when the layout moves
  let contentBottom = 0;    // where the node boxes end (the hop legend goes below if it fits)
  let selectedFlow = null;
  let selectedEvents = -1;

  function pointFor(at) {
    if (!at || !at.kind) return null;
    if (at.kind === 'pod') {
      const p = positions.pods.get(at.key);
      // On the tile's top edge (a dense tile is too small for that: its centre).
      if (!p) return null;
      return metrics.mode === 'dense' ? { x: p.x + p.w / 2, y: p.y + p.h / 2 } : { x: p.x + p.w / 2, y: p.y - 2 };
    }
    if (at.kind === 'proxy') {
      const p = positions.proxy;
      return p ? { x: p.x + p.w / 2, y: p.y + p.h / 2 } : null;
    }
    if (at.kind === 'node') {
      if (at.key === PROXY_KEY) return pointFor({ kind: 'proxy', key: at.key });
      const n = positions.nodes.get(at.key);
      // On the box's top edge: the node's tunnel end, clear of its texts.
      return n ? { x: n.x + n.w / 2, y: n.y } : null;
    }
    return null;
  }

  function podByIp(ip) {
    if (!ip) return null;
    const bare = ip.replace(/:\d+$/, '');
    for (const [k, p] of model.pods) if (p.ip === bare) return k;
    return null;
  }

  // The hops in the order the traffic crossed the topology (client pod, its node's tunnel,
  // the proxy, the far node, the endpoint pod; the client's close last). The detail lists them
  // in log time, where a tunnel's stream_out is logged only once the far side answered.
  function pathOrder(detail) {
    const row = detail.flow || {};
    const hops = arr(detail.hops);
    const src = row.srcPod || podByIp(row.src) || '';
    const srcPod = src ? model.pods.get(src) : null;
    const srcNode = (srcPod && srcPod.node) || (hops[0] && hops[0].node) || '';
    const rank = (h) => {
      const at = h.at || {};
      if (h.event === 'flow.closed') return 5;
      if (at.kind === 'proxy') return 2;
      if (at.kind === 'pod') return at.key === src ? 0 : 4;
      if (at.kind === 'node') {
        if (at.key === PROXY_KEY) return 2;
        // A tunnel's sending end is on the way out, its receiving end on the way in (the
        // same node can be both when the proxy picked an endpoint beside the client).
        if (h.event === 'tunnel.stream_out') return 1;
        if (h.event === 'tunnel.stream_in') return 3;
        return at.key === srcNode ? 1 : 3;
      }
      return null;
    };
    let last = 0;
    const items = hops.map((h, i) => {
      let k = rank(h);
      if (k === null) k = last;
      last = k;
      return { h, i, k };
    });
    items.sort((a, b) => a.k - b.k || a.i - b.i);
    return items;
  }

  function drawPath(detail) {
    let g = $('flow-path');
    if (!g) g = svg('g', { id: 'flow-path' }, layerFlow);
    while (g.firstChild) g.firstChild.remove();
    const row = detail.flow || {};
    const hops = arr(detail.hops);
    setA(g, 'data-flow', row.id || selectedFlow || '');
    setA(g, 'data-hops', hops.length);
    setA(g, 'data-outcome', detail.outcome || row.outcome || 'UNKNOWN');
    const srcKey = row.srcPod || podByIp(row.src);
    let prev = pointFor({ kind: 'pod', key: srcKey });
    // The pods the flow touched, outlined.
    const touched = svg('g', { class: 'touched' }, g);
    const podKeys = new Set(arr(detail.hops).filter((h) => h.at && h.at.kind === 'pod').map((h) => h.at.key));
    for (const pk of podKeys) {
      const pp = positions.pods.get(pk);
      if (pp) svg('rect', { x: r(pp.x - 4), y: r(pp.y - 4), width: r(pp.w + 8), height: r(pp.h + 8), rx: 8 }, touched);
    }
    const segs = svg('g', { class: 'segs' }, g);
    const badges = svg('g', { class: 'badges' }, g);
    const legend = svg('g', { class: 'hop-legend' }, g);
    const stack = new Map();   // how many badges already sit at a point
    const points = [];
    LEG.w = Math.max(560, Math.min(1000, (metrics.width || 1000) - 2 * M));
    const legH = LEG.head + hops.length * LEG.line + 8;
    svg('rect', { class: 'legend-bg', width: r(LEG.w), height: legendFolded ? 28 : legH, rx: 10 }, legend);
    const title = svg('text', { x: 12, y: 18, class: 'legend-title' }, legend);
    title.textContent = `flow ${row.id || selectedFlow || ''} · ${detail.outcome || row.outcome || 'UNKNOWN'} · ${hops.length} hop${hops.length === 1 ? '' : 's'}`;
    const fold = svg('text', { x: r(LEG.w - 12), y: 18, class: 'legend-fold', 'text-anchor': 'end' }, legend);
    fold.textContent = legendFolded ? 'show hops ▴' : 'hide ▾';
    // Folding leaves the title line only (on a small screen the legend can hide the nodes).
    legend.addEventListener('click', () => {
      legendFolded = !legendFolded;
      if (currentPath) drawPath(currentPath);
    });
    legend._h = legendFolded ? 28 : legH;
    if (legendFolded) legend.classList.add('folded');
    pathOrder(detail).forEach(({ h, i: logIndex }, i) => {
      const at = h.at || {};
      let pt = pointFor(at);
      if (!pt && h.node) pt = pointFor({ kind: 'node', key: h.node });
      if (!pt) pt = prev || { x: M + 20, y: M + 20 };
      const from = prev || pt;
      const verdict = (h.verdict || '').toLowerCase();
      const bad = BAD_VERDICT.test(verdict);
      const path = svg('path', {
        class: 'hop' + (bad ? ' bad' : ''),
        'data-at-kind': at.kind || '',
        'data-at-key': at.key || '',
        'data-index': i,
        'data-log-index': logIndex,
        'data-event': h.event || '',
      }, segs);
      if (Math.hypot(pt.x - from.x, pt.y - from.y) < 2) {
        // A hop at the same place: a small loop, so it is still seen and clickable.
        const rr = 9;
        path.setAttribute('d', `M${r(pt.x)} ${r(pt.y - rr)} a${rr} ${rr} 0 1 1 -0.1 0`);
      } else {
        const mx = (from.x + pt.x) / 2;
        const my = (from.y + pt.y) / 2 - Math.min(60, Math.abs(pt.x - from.x) * 0.15);
        path.setAttribute('d', `M${r(from.x)} ${r(from.y)} Q${r(mx)} ${r(my)} ${r(pt.x)} ${r(pt.y)}`);
        path.setAttribute('marker-end', 'url(#arrow)');
      }
      const reason = h.detail || '';
      const where = h.process || h.where || h.node || '?';
      svg('title', null, path).textContent =
        `${i + 1}. ${h.event || '?'} [${h.verdict || '-'}] at ${where}\n${reason}`;
      // A numbered badge where the hop happened (side by side when several share a place).
      const sk = `${Math.round(pt.x)},${Math.round(pt.y)}`;
      const n = stack.get(sk) || 0;
      stack.set(sk, n + 1);
      const bg = svg('g', { class: 'hop-badge' + (bad ? ' bad' : ''), 'data-index': i }, badges);
      const bx = pt.x + n * 19;
      svg('circle', { cx: r(bx), cy: r(pt.y), r: 8.5 }, bg);
      const num = svg('text', { x: r(bx), y: r(pt.y + 3.5), class: 'num', 'text-anchor': 'middle' }, bg);
      num.textContent = String(i + 1);
      // Its label in the legend, one line in columns: number, event, verdict, where, reason.
      const ly = LEG.head + i * LEG.line;
      const lg = svg('g', { class: 'hop-label' + (bad ? ' bad' : ''), 'data-index': i }, legend);
      svg('circle', { cx: 18, cy: ly + 7, r: 7.5 }, lg);
      const ln = svg('text', { x: 18, y: ly + 10.5, class: 'num', 'text-anchor': 'middle' }, lg);
      ln.textContent = String(i + 1);
      const col = (x, cls, text) => {
        const t = svg('text', { x, y: ly + 11, class: cls }, lg);
        t.textContent = text;
        return t;
      };
      col(LEG.cols[0], 'txt ev', clip(h.event || '?', 19));
      col(LEG.cols[1], 'txt vd', clip(h.verdict ? `[${h.verdict}]` : '', 17));
      col(LEG.cols[2], 'txt wh', clip(`${where} +${Number(h.offset_ms ?? h.offsetMs ?? 0).toFixed(1)}ms`, 26));
      col(LEG.cols[3], 'rs', clip(reason || '—', Math.floor((LEG.w - LEG.cols[3] - 10) / 5.8)));
      svg('title', null, lg).textContent =
        `${i + 1}. ${h.event || '?'} [${h.verdict || '-'}] at ${where}\n${reason}`;
      prev = pt;
      points.push(pt);
    });
    legend._points = points;
    placeLegend();
  }

  // The hop legend floats in the visible corner of the topology, whatever the scroll.
  let legendFolded = false;
  const LEG = { w: 560, head: 28, line: 19, cols: [32, 166, 282, 452] };
  function placeLegend() {
    const legend = document.querySelector('#flow-path .hop-legend');
    if (!legend) return;
    const sc = $('topology-scroll');
    const top = sc.scrollTop;
    const sl = sc.scrollLeft;
    // Under the node boxes when it fits in view there; else in a bottom corner of the view.
    const below = contentBottom + 18;
    if (below >= top && below + legend._h <= top + sizes.topoH - 8) {
      legend.setAttribute('transform', `translate(${r(sl + M)},${r(below)})`);
      return;
    }
    const y = Math.max(4, top + sizes.topoH - legend._h - 12);
    const right = Math.max(4, sl + Math.min(sizes.topoW, metrics.width || sizes.topoW) - LEG.w - 12);
    const left = sl + 12;
    // The bottom corner that hides fewer of the path's own points.
    const pts = legend._points || [];
    const hidden = (x) => pts.filter((p) => p.x >= x - 10 && p.x <= x + LEG.w + 10 && p.y >= y - 10 && p.y <= y + legend._h + 10).length;
    const x = hidden(left) < hidden(right) ? left : right;
    legend.setAttribute('transform', `translate(${r(x)},${r(y)})`);
  }

  function clearPath() {
    const g = $('flow-path');
    if (g) g.remove();
    currentPath = null;
  }

  async function selectFlow(id) {
    selectedFlow = id;
    const row = model.flows.get(id);
    selectedEvents = row ? row.events : -1;
    for (const tr of $('flow-rows').querySelectorAll('tr.selected')) tr.classList.remove('selected');
    const tr = flowTrs.get(id);
    if (tr) tr.classList.add('selected');
    await fetchDetail(id);
  }

  async function fetchDetail(id) {
    const box = $('flow-detail');
    let detail;
    try {
      const res = await fetch(BASE + 'api/flows/' + encodeURIComponent(id), { credentials: 'same-origin' });
      if (selectedFlow !== id) return;
      if (!res.ok) {
        box.hidden = false;
        box.innerHTML = `<div class="dhead"><b>flow ${esc(id)}</b></div><p class="why">` +
          (res.status === 404 ? 'The control plane no longer holds this flow (it was evicted).' :
            `Could not load it: HTTP ${res.status}.`) + '</p>';
        clearPath();
        return;
      }
      detail = await res.json();
    } catch (err) {
      if (selectedFlow !== id) return;
      box.hidden = false;
      box.innerHTML = `<p class="why">Could not load flow ${esc(id)}: ${esc(err.message || err)}</p>`;
      return;
    }
    if (selectedFlow !== id) return;
    if (!detail.flow) detail.flow = model.flows.get(id) || { id };
    if (!detail.flow.id) detail.flow.id = id;
    currentPath = detail;
    drawPath(detail);
    renderDetail(detail);
  }

  function renderDetail(d) {
    const box = $('flow-detail');
    const row = d.flow || {};
    const outcome = d.outcome || row.outcome || 'UNKNOWN';
    const hops = arr(d.hops);
    const decisions = arr(d.decisions);
    let html = `<div class="dhead"><span class="badge o-${esc(outcome)}">${esc(outcome)}</span>` +
      `<b>flow ${esc(row.id || selectedFlow)}</b><button type="button" class="close" title="Hide the path">×</button></div>` +
      `<div class="route">${esc(row.srcPod || row.src || '?')} → ${esc(row.service ? row.service + ' → ' : '')}${esc(row.dstPod || row.dst || '?')}` +
      ` <span class="proto">${esc(row.proto || '')}</span></div>`;
    if (d.why) html += `<p class="why">${esc(d.why)}</p>`;
    html += '<h3>hops</h3><ol class="hops">';
    for (const h of hops) {
      const off = h.offset_ms ?? h.offsetMs ?? 0;
      html += `<li><span class="off">+${Number(off).toFixed(1)}ms</span> ` +
        `<span class="proc">${esc(h.process || h.where || h.node || '?')}</span> ` +
        `<span class="ev">${esc(h.event || '')}</span> ` +
        (h.verdict ? `<span class="vd">[${esc(h.verdict)}]</span> ` : '') +
        `<span class="dt">${esc(h.detail || '')}</span></li>`;
    }
    html += '</ol><h3>policy</h3>';
    if (!decisions.length) html += '<p class="none">no policy.verdict events for this flow</p>';
    else {
      html += '<ul class="decisions">';
      for (const x of decisions) {
        html += `<li class="${x.allowed ? 'ok' : 'bad'}"><b>${esc(x.direction || '?')}</b> at ${esc(x.pod || x.node || '?')}: ` +
          `${x.allowed ? 'allowed' : 'DENIED'}${x.policy ? ` by ${esc(x.policy)}` : ''}${x.rule ? ` (${esc(x.rule)})` : ''}` +
          `<div class="reason">${esc(x.reason || '')}</div></li>`;
      }
      html += '</ul>';
    }
    box.innerHTML = html;
    box.hidden = false;
    box.querySelector('.close').addEventListener('click', closeDetail);
  }

  function closeDetail() {
    selectedFlow = null;
    clearPath();
    $('flow-detail').hidden = true;
    for (const tr of $('flow-rows').querySelectorAll('tr.selected')) tr.classList.remove('selected');
  }

  // ---- flow table ----------------------------------------------------------------------------
  const flowTrs = new Map();   // id -> tr
  const filterIds = ['flow-filter-pod', 'flow-filter-node', 'flow-filter-verdict', 'flow-filter-proto', 'flow-filter-flow'];

  function globRe(s) {
    return new RegExp('^' + s.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
  }

  function currentFilter() {
    const v = (id) => $(id).value.trim();
    const f = {};
    const pod = v('flow-filter-pod');
    if (pod) {
      const slash = pod.lastIndexOf('/');
      f.podNs = slash >= 0 ? pod.slice(0, slash) : '';
      f.podName = globRe(slash >= 0 ? pod.slice(slash + 1) : pod);
    }
    const node = v('flow-filter-node');
    if (node) f.node = node;
    const verdict = v('flow-filter-verdict').toLowerCase();
    if (verdict) f.verdicts = new Set(VERDICT_ALIASES[verdict] || [verdict]);
    const proto = v('flow-filter-proto').toLowerCase();
    if (proto) f.proto = proto;
    const flow = v('flow-filter-flow');
    if (flow) f.flow = flow;
    return f;
  }

  function podMatches(f, key) {
    if (!key) return false;
    const slash = key.indexOf('/');
    const ns = slash >= 0 ? key.slice(0, slash) : '';
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    return (!f.podNs || f.podNs === ns) && f.podName.test(name);
  }

  function matches(row, f) {
    if (f.flow && !String(row.id || '').startsWith(f.flow)) return false;
    if (f.node && !arr(row.nodes).includes(f.node)) return false;
    if (f.proto && String(row.proto || '').toLowerCase() !== f.proto) return false;
    if (f.podName && !podMatches(f, row.srcPod) && !podMatches(f, row.dstPod)) return false;
    if (f.verdicts) {
      // Like `podnet logs --verdict`: any event's verdict in the flow, or its outcome.
      const have = (Array.isArray(row.verdicts) && row.verdicts.length ? row.verdicts : [row.verdict || ''])
        .map((v) => String(v).toLowerCase());
      have.push(String(row.outcome || '').toLowerCase());
      if (!have.some((v) => f.verdicts.has(v))) return false;
    }
    return true;
  }

  function fmtTime(ts) {
    if (typeof ts !== 'number') return '';
    const d = new Date(ts * 1000);
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3).slice(0, 1)}`;
  }
  const short = (key, ip) => key ? key.replace(/^default\//, '') : (ip || '?');

  function fillTr(tr, row) {
    const outcome = row.outcome || 'UNKNOWN';
    setA(tr, 'data-verdict', row.verdict || '');
    setA(tr, 'data-outcome', outcome);
    const cells = tr.children;
    setT(cells[0], fmtTime(row.ts));
    const via = row.service ? ` ⟶ ${short(row.service)}` : '';
    setT(cells[1].firstChild, `${short(row.srcPod, row.src)}${via} → ${short(row.dstPod, row.dst)}`);
    setT(cells[1].lastChild, `${row.id} · ${arr(row.nodes).join(', ')} · ${row.events || 0} events`);
    setT(cells[2], row.proto || '');
    setT(cells[3].firstChild, row.verdict || outcome.toLowerCase());
    setA(cells[3].firstChild, 'class', 'badge o-' + outcome);
    tr.title = `flow ${row.id}: ${row.src || '?'} -> ${row.dst || '?'} ${row.proto || ''}\n` +
      `outcome ${outcome}, verdict ${row.verdict || '-'}, ${row.events || 0} events\nnodes ${arr(row.nodes).join(', ')}`;
  }

  function flowTr(row) {
    let tr = flowTrs.get(row.id);
    if (!tr) {
      tr = document.createElement('tr');
      tr.className = 'flow';
      tr.dataset.flow = row.id;
      tr.innerHTML = '<td class="t"></td><td class="who"><div class="pair"></div><div class="meta"></div></td>' +
        '<td class="pr"></td><td><span class="badge"></span></td>';
      tr.tabIndex = 0;
      tr.addEventListener('click', () => selectFlow(row.id));
      tr.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); selectFlow(row.id); }
      });
      flowTrs.set(row.id, tr);
      tr._rendered = null;
      // A row that arrives live (not with the first snapshot) is tinted for a moment.
      if (seenSnapshot) tr.classList.add('fresh');
    }
    if (tr._rendered !== row) { fillTr(tr, row); tr._rendered = row; }
    if (row.id === selectedFlow) tr.classList.add('selected');
    return tr;
  }

  // Make parent's children exactly `want`, cheaply in the common case (new rows on top, the
  // oldest falling off the bottom): only those rows are inserted and removed.
  function syncChildren(parent, want) {
    const kids = parent.children;
    const k = kids.length ? want.indexOf(kids[0]) : want.length;
    let run = k >= 0;
    for (let i = 0; run && k + i < want.length && i < kids.length; i++) {
      if (kids[i] !== want[k + i]) run = false;
    }
    if (!run) { parent.replaceChildren(...want); return; }
    const had = kids.length;
    if (k > 0) {
      const frag = document.createDocumentFragment();
      for (let i = 0; i < k; i++) frag.appendChild(want[i]);
      parent.insertBefore(frag, parent.firstChild);
    }
    // Rows past the old run (a filter was widened): appended after it.
    if (k + had < want.length) {
      const frag = document.createDocumentFragment();
      for (let i = k + had; i < want.length; i++) frag.appendChild(want[i]);
      parent.appendChild(frag);
    }
    while (kids.length > want.length) parent.lastChild.remove();
  }

  function renderFlows() {
    const f = currentFilter();
    const rows = Array.from(model.flows.values());
    rows.sort((a, b) => (b.ts || 0) - (a.ts || 0) || (b.last || 0) - (a.last || 0));
    const shown = [];
    let total = 0;
    for (const row of rows) {
      if (!matches(row, f)) continue;
      total += 1;
      if (shown.length < MAX_VISIBLE_ROWS) shown.push(flowTr(row));
    }
    syncChildren($('flow-rows'), shown);
    for (const [id, tr] of flowTrs) if (!model.flows.has(id)) flowTrs.delete(id);
    const empty = $('flow-empty');
    empty.hidden = shown.length > 0;
    empty.textContent = model.flows.size ? 'No flow matches these filters.' : 'No flows yet. Traffic between pods shows up here.';
    $('flow-table-wrap').dataset.shown = String(shown.length);
    $('flow-table-wrap').dataset.matching = String(total);
    const more = $('flow-more');
    more.hidden = total <= shown.length;
    more.textContent = `the newest ${shown.length} of ${total} matching flows are listed`;
    // The selected flow gained events: fetch its story again so the path completes.
    if (selectedFlow) {
      const row = model.flows.get(selectedFlow);
      if (row && row.events !== selectedEvents) {
        selectedEvents = row.events;
        fetchDetail(selectedFlow);
      }
    }
  }

  function renderStats() {
    const s = model.flowStats || {};
    const kept = s.flowsKept ?? model.flows.size;
    const evicted = s.flowsEvicted ?? 0;
    const missedBy = s.eventsMissed && typeof s.eventsMissed === 'object' ? s.eventsMissed : {};
    const missed = typeof s.eventsMissed === 'number' ? s.eventsMissed
      : Object.values(missedBy).reduce((a, b) => a + (Number(b) || 0), 0);
    const dropped = s.eventsDropped ?? 0;
    const box = $('flow-stats');
    // Which processes' events were missed, spelled out when there are any.
    const by = Object.entries(missedBy).filter(([, v]) => Number(v) > 0).map(([k, v]) => `${k}: ${v}`);
    let text = `${kept} flows kept · ${evicted} evicted · ${missed} events missed` +
      (by.length ? ` (${by.join(', ')})` : '') + ` · ${dropped} dropped`;
    // Other counters the hub reports (e.g. snapshots re-sent to a slow page), never hidden.
    const extra = Object.entries(s).filter(([k, v]) =>
      !['flowsKept', 'flowsEvicted', 'eventsMissed', 'eventsDropped'].includes(k) && typeof v === 'number');
    for (const [k, v] of extra) text += ` · ${v} ${k.replace(/([A-Z])/g, ' $1').toLowerCase()}`;
    setT(box, text);
    setA(box, 'data-missed', missed);
    setA(box, 'data-evicted', evicted);
    setA(box, 'data-dropped', dropped);
    box.classList.toggle('warn', missed > 0 || dropped > 0);
    box.title = 'Flows the control plane holds and has evicted (oldest first); events the page never got:\n' +
      (Object.keys(missedBy).length ? Object.entries(missedBy).map(([k, v]) => `  ${k}: ${v} missed`).join('\n')
        : '  no process reported missed events');
  }

  function addFlowRows(rows) {
    for (const row of arr(rows)) {
      if (row && row.id) model.flows.set(row.id, row);
    }
    if (model.flows.size > MAX_FLOWS) {
      const old = Array.from(model.flows.values()).sort((a, b) => (a.last || a.ts || 0) - (b.last || b.ts || 0));
      for (const row of old.slice(0, model.flows.size - MAX_FLOWS)) model.flows.delete(row.id);
    }
    dirty.flows = true;
  }

  function setFilter(id, value) {
    $(id).value = value;
    dirty.flows = true;
    schedule();
  }

  // ---- link chart ----------------------------------------------------------------------------
  const linkEls = new Map();
  const CARD = { w: 236, h: 72, cx: 10, cy: 36, cw: 216, ch: 28 };

  function fmtRate(b) {
    if (!(b > 0)) return '0 B/s';
    const u = ['B/s', 'KB/s', 'MB/s', 'GB/s'];
    let i = 0;
    while (b >= 1000 && i < u.length - 1) { b /= 1000; i++; }
    return `${b >= 100 ? b.toFixed(0) : b >= 10 ? b.toFixed(1) : b.toFixed(2)} ${u[i]}`;
  }

  // The control plane's proxy is a tunnel peer too; "proxy" reads better on a small card.
  const nodeLabel = (n) => (n === PROXY_KEY ? 'proxy' : n);

  function renderLinks() {
    const series = Array.isArray(model.links) ? model.links : [];
    const wrap = $('link-cards');
    const want = new Set();
    let now = 0;
    for (const s of series) for (const p of arr(s.points)) if (Array.isArray(p) && p[0] > now) now = p[0];
    const t0 = now - 60;
    // Cards share the width: one row up to 4 pairs, two rows beyond.
    const n = Math.max(1, series.length);
    const avail = Math.max(300, sizes.linksW - 26);
    let perRow = Math.max(1, Math.min(n, Math.floor((avail + 10) / 172)));
    perRow = Math.ceil(n / Math.ceil(n / perRow));   // balance the rows
    CARD.w = Math.max(160, Math.min(300, Math.floor((avail - 10 * (perRow - 1)) / perRow)));
    CARD.cw = CARD.w - 2 * CARD.cx;
    // Taller cards (a taller chart) when the rows leave room in the pane.
    const rows = Math.ceil(n / perRow);
    CARD.h = Math.max(72, Math.min(140, Math.floor((sizes.linksH - 4 - 8 * (rows - 1)) / rows)));
    CARD.ch = CARD.h - CARD.cy - 8;
    const sorted = series.slice().sort((a, b) => collator.compare(a.from + ' ' + a.to, b.from + ' ' + b.to));
    sorted.forEach((s) => {
      const key = `${s.from}\u2192${s.to}`;
      want.add(key);
      let e = linkEls.get(key);
      if (!e) {
        const card = svg('svg', { class: 'link-card', width: CARD.w, height: CARD.h, viewBox: `0 0 ${CARD.w} ${CARD.h}` });
        const g = svg('g', { class: 'link', 'data-from': s.from, 'data-to': s.to }, card);
        e = {
          card, g,
          bg: svg('rect', { class: 'card', x: 0.5, y: 0.5, width: CARD.w - 1, height: CARD.h - 1, rx: 8 }, g),
          label: svg('text', { x: 10, y: 16, class: 'pair' }, g),
          errn: svg('text', { x: CARD.w - 10, y: 16, class: 'errn', 'text-anchor': 'end' }, g),
          rate: svg('text', { x: 10, y: 31, class: 'rate' }, g),
          base: svg('line', { class: 'base', x1: CARD.cx, x2: CARD.cx + CARD.cw, y1: CARD.cy + CARD.ch, y2: CARD.cy + CARD.ch }, g),
          area: svg('path', { class: 'area' }, g),
          line: svg('polyline', { class: 'spark' }, g),
          errs: svg('g', { class: 'errors' }, g),
          peak: svg('text', { x: CARD.w - 10, y: 31, class: 'peak', 'text-anchor': 'end' }, g),
          tip: svg('title', null, g),
        };
        linkEls.set(key, e);
      }
      setA(e.card, 'width', CARD.w);
      setA(e.card, 'height', CARD.h);
      setA(e.card, 'viewBox', `0 0 ${CARD.w} ${CARD.h}`);
      setA(e.bg, 'width', CARD.w - 1);
      setA(e.bg, 'height', CARD.h - 1);
      setA(e.base, 'y1', CARD.cy + CARD.ch);
      setA(e.base, 'y2', CARD.cy + CARD.ch);
      setA(e.errn, 'x', CARD.w - 10);
      setA(e.peak, 'x', CARD.w - 10);
      setA(e.base, 'x2', CARD.cx + CARD.cw);
      const pts = arr(s.points).filter((p) => Array.isArray(p) && typeof p[0] === 'number' && p[0] >= t0);
      let peak = 0;
      for (const p of pts) peak = Math.max(peak, p[1] || 0);
      const scale = peak > 0 ? CARD.ch / peak : 0;
      const X = (ts) => CARD.cx + ((ts - t0) / 60) * CARD.cw;
      const Y = (v) => CARD.cy + CARD.ch - (v || 0) * scale;
      const coords = pts.map((p) => `${r(X(p[0]))},${r(Y(p[1]))}`);
      setA(e.line, 'points', coords.join(' '));
      setA(e.area, 'd', coords.length
        ? `M${r(X(pts[0][0]))},${CARD.cy + CARD.ch} L${coords.join(' L')} L${r(X(pts[pts.length - 1][0]))},${CARD.cy + CARD.ch} Z` : '');
      const last = pts.length ? pts[pts.length - 1] : [now, 0, 0];
      let errTotal = 0;
      const errPts = pts.filter((p) => (p[2] || 0) > 0);
      for (const p of errPts) errTotal += p[2];
      const kids = e.errs.children;
      while (kids.length > errPts.length) kids[kids.length - 1].remove();
      errPts.forEach((p, i) => {
        const m = kids[i] || svg('rect', { width: 3, rx: 1 }, e.errs);
        const h = Math.min(CARD.ch, 6 + p[2] * 3);
        setA(m, 'x', r(X(p[0]) - 1.5)); setA(m, 'y', r(CARD.cy + CARD.ch - h)); setA(m, 'height', r(h));
      });
      setT(e.label, clip(`${nodeLabel(s.from)} → ${nodeLabel(s.to)}`, Math.floor((CARD.w - 56) / 6.8)));
      const errNow = last[2] || 0;
      setT(e.rate, fmtRate(last[1]));
      e.g.classList.toggle('erring', errNow > 0);
      setT(e.errn, errTotal > 0 ? `${Math.round(errTotal)} err` : '');
      setT(e.peak, `peak ${fmtRate(peak)}`);
      e.g.classList.toggle('has-errors', errTotal > 0);
      e.g.classList.toggle('idle', peak === 0);
      setA(e.g, 'data-rate', r(last[1] || 0));
      setA(e.g, 'data-errors', r(errTotal));
      setT(e.tip, `${s.from} → ${s.to}: bytes per second over the tunnel (both ways, as ${s.from} counts them)\n` +
        `now ${fmtRate(last[1])} and ${errNow} errors/s, peak ${fmtRate(peak)}, ${Math.round(errTotal)} errors in the last 60 s`);
    });
    for (const [k, e] of linkEls) if (!want.has(k)) { e.card.remove(); linkEls.delete(k); }
    const cards = sorted.map((s) => linkEls.get(`${s.from}\u2192${s.to}`).card);
    const kids = wrap.children;
    let same = kids.length === cards.length;
    for (let i = 0; same && i < cards.length; i++) if (kids[i] !== cards[i]) same = false;
    if (!same) {
      if (cards.length) wrap.replaceChildren(...cards);
      else wrap.innerHTML = '<div class="empty small">No tunnel traffic measured yet.</div>';
    }
  }

  // ---- header --------------------------------------------------------------------------------
  function renderSummary() {
    const n = (m, one, many = one + 's') => `<b>${m.size}</b> ${m.size === 1 ? one : many}`;
    let bad = 0;
    for (const node of model.nodes.values()) if (node.gossip === 'dead' || node.gossip === 'suspect' || node.ready === false) bad++;
    $('summary').innerHTML = [
      n(model.nodes, 'node') + (bad ? ` <span class="warn">(${bad} unhealthy)</span>` : ''),
      n(model.pods, 'pod'), n(model.services, 'service'), n(model.policies, 'policy', 'policies'),
      n(model.faults, 'fault'),
    ].join('<span class="dotsep">·</span>');
    const srv = model.server || {};
    $('cluster-name').textContent = srv.cluster || srv.name || location.host;
    if (srv.version) $('cluster-name').title = 'podnet ' + srv.version;
  }

  // ---- applying messages ---------------------------------------------------------------------
  function upsert(kind, ent) {
    if (!ent || typeof ent.key !== 'string') return;
    const old = model[kind].get(ent.key);
    model[kind].set(ent.key, ent);
    dirty[kind].add(ent.key);
    if (kind === 'pods' && old && old.node !== ent.node && old.node) dirty.nodes.add(old.node);
  }
  function remove(kind, key) {
    if (!model[kind].has(key)) return;
    model[kind].delete(key);
    dirty[kind].add(key);
  }

  let seenSnapshot = false;
  function applySnapshot(d) {
    const view = d.view || {};
    for (const kind of KINDS) {
      const fresh = new Map();
      for (const ent of arr(view[kind])) if (ent && typeof ent.key === 'string') fresh.set(ent.key, ent);
      for (const key of model[kind].keys()) if (!fresh.has(key)) remove(kind, key);
      for (const ent of fresh.values()) {
        // Unchanged entities keep their elements untouched.
        const old = model[kind].get(ent.key);
        if (old && JSON.stringify(old) === JSON.stringify(ent)) continue;
        upsert(kind, ent);
      }
    }
    model.flows.clear();
    addFlowRows(arr(d.flows));
    model.flowStats = d.flowStats || {};
    model.links = arr(d.links);
    model.server = d.server || {};
    dirty.flowStats = dirty.links = dirty.summary = dirty.layout = true;
    // Rows from this snapshot are drawn before the flag flips (render runs after the batch).
    setTimeout(() => { seenSnapshot = true; }, 0);
  }

  function applyPatch(d) {
    const up = d.upsert || {};
    const del = d.delete || {};
    for (const kind of KINDS) {
      for (const key of arr(del[kind])) remove(kind, key);
      for (const ent of arr(up[kind])) upsert(kind, ent);
    }
    dirty.layout = dirty.summary = true;
  }

  function msgTs(type, d) {
    if (d && typeof d.ts === 'number') return d.ts;
    if (d && d.server && typeof d.server.ts === 'number') return d.server.ts;
    return null;
  }

  const queue = [];
  let scheduled = false;
  let lastMessage = 0;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    // rAF batches a burst into one frame; the timer keeps a hidden tab (no frames) current.
    const run = () => { if (scheduled) { scheduled = false; flush(); } };
    requestAnimationFrame(run);
    setTimeout(run, 250);
  }

  const perf = { flushes: 0, messages: 0, lastMs: 0, maxMs: 0, totalMs: 0 };
  function flush() {
    const t0 = performance.now();
    const batch = queue.splice(0);
    perf.messages += batch.length;
    for (const [type, d] of batch) {
      try {
        if (type === 'snapshot') applySnapshot(d);
        else if (type === 'patch') applyPatch(d);
        else if (type === 'flows') {
          addFlowRows(d.rows);
          if (d.stats) { model.flowStats = d.stats; dirty.flowStats = true; }
        } else if (type === 'links') {
          model.links = Array.isArray(d) ? d : arr(d.links || d.series);
          dirty.links = true;
        }
        // Only the server's clock: a message without a ts (links) leaves the mark alone, so
        // the bench's latency reading is never advanced by an unrelated message.
        const ts = msgTs(type, d);
        if (ts !== null) {
          dirty.updated = ts;
          if (type === 'snapshot' || type === 'patch') dirty.topologyUpdated = ts;
        }
      } catch (err) {
        console.warn('podnet: could not apply a', type, 'message:', err);
      }
    }
    render();
    const ms = performance.now() - t0;
    perf.flushes += 1;
    perf.lastMs = ms;
    perf.totalMs += ms;
    if (ms > perf.maxMs) perf.maxMs = ms;
  }

  // One part that cannot be drawn (an entity of an unexpected shape) must not stop the rest.
  function safely(what, fn) {
    try { fn(); } catch (err) { console.warn('podnet: could not draw the', what, err); }
  }

  function render() {
    for (const key of dirty.nodes) safely('node', () => updateNode(key));
    for (const key of dirty.pods) safely('pod', () => updatePod(key));
    for (const key of dirty.services) safely('service', () => updateService(key));
    if (dirty.nodes.size || dirty.pods.size || dirty.services.size || dirty.policies.size || dirty.faults.size) dirty.layout = true;
    dirty.nodes.clear(); dirty.pods.clear(); dirty.services.clear();
    dirty.policies.clear(); dirty.faults.clear();
    let t = performance.now();
    const lap = (name) => { const n = performance.now(); perf[name] = (perf[name] || 0) + n - t; t = n; };
    if (dirty.layout) { dirty.layout = false; safely('layout', layout); lap('layoutMs'); }
    if (dirty.flows) { dirty.flows = false; safely('flows', renderFlows); lap('flowsMs'); }
    if (dirty.flowStats) { dirty.flowStats = false; safely('flow stats', renderStats); }
    if (dirty.links) { dirty.links = false; safely('links', renderLinks); lap('linksMs'); }
    if (dirty.summary) { dirty.summary = false; safely('summary', renderSummary); }
    if (dirty.updated !== null) {
      root.setAttribute('data-updated', String(dirty.updated));
      dirty.updated = null;
    }
    if (dirty.topologyUpdated !== null) {
      root.setAttribute('data-topology-updated', String(dirty.topologyUpdated));
      dirty.topologyUpdated = null;
    }
  }

  // ---- the event stream ----------------------------------------------------------------------
  let source = null;
  let retryTimer = null;
  function setLive(state, label) {
    const live = $('live');
    live.dataset.state = state;
    live.querySelector('.label').textContent = label;
  }

  function connect() {
    if (source) source.close();
    clearTimeout(retryTimer);
    setLive('down', 'connecting…');
    source = new EventSource(BASE + 'events', { withCredentials: true });
    const on = (type) => source.addEventListener(type, (ev) => {
      lastMessage = Date.now();
      let d;
      try { d = JSON.parse(ev.data); } catch (err) {
        console.warn('podnet: a', type, 'event that is not JSON was ignored');
        return;
      }
      if ($('live').dataset.state !== 'live') setLive('live', 'live');
      queue.push([type, d]);
      schedule();
    });
    for (const type of ['snapshot', 'patch', 'flows', 'links']) on(type);
    source.onopen = () => { lastMessage = Date.now(); setLive('live', 'live'); };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused outright (e.g. 401: the login cookie expired): retry, and say how to log in.
        setLive('down', 'disconnected — if it persists, get a new link with: podnet ui');
        retryTimer = setTimeout(connect, 5000);
      } else {
        setLive('down', 'reconnecting…');
      }
    };
  }

  setInterval(() => {
    if (source && $('live').dataset.state === 'live' && Date.now() - lastMessage > STALE_MS) {
      setLive('down', 'no updates — reconnecting…');
      connect();
    }
  }, 2000);

  // ---- wiring --------------------------------------------------------------------------------
  for (const id of filterIds) {
    $(id).addEventListener('input', () => { dirty.flows = true; schedule(); });
  }
  $('flow-filter-clear').addEventListener('click', () => {
    for (const id of filterIds) $(id).value = '';
    dirty.flows = true;
    schedule();
  });
  $('topology-scroll').addEventListener('scroll', placeLegend, { passive: true });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && selectedFlow) closeDetail();
  });
  // Sizes come from the ResizeObserver only: reading clientWidth after changing the DOM would
  // force the browser to lay out the whole page (hundreds of tiles) in the middle of a flush.
  let resizeTimer = null;
  const ro = new ResizeObserver((entries) => {
    for (const en of entries) {
      if (en.target.id === 'topology-scroll') {
        sizes.topoW = en.contentRect.width; sizes.topoH = en.contentRect.height;
      } else {
        sizes.linksW = en.contentRect.width; sizes.linksH = en.contentRect.height;
      }
    }
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      dirty.links = true;
      dirty.layout = true;   // width: columns; height: the svg fills the pane
      schedule();
    }, 60);
  });
  ro.observe($('topology-scroll'));
  ro.observe($('link-cards'));

  // For tests and the bench: the page's own view of what it applied.
  window.podnetUI = {
    counts: () => ({
      nodes: model.nodes.size, pods: model.pods.size, services: model.services.size,
      policies: model.policies.size, faults: model.faults.size, flows: model.flows.size,
      edges: els.edges.size,
    }),
    selectFlow,
    // How long applying messages took (ms): the page's own share of an update's latency.
    perf: () => ({ ...perf, meanMs: perf.flushes ? perf.totalMs / perf.flushes : 0 }),
  };

  layout();
  renderStats();
  connect();
})();
