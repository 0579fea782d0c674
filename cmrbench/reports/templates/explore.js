// Sortable leaderboard columns and board filters, over the JSON embedded in the page.
// Plain DOM code: no library, no network; without JavaScript the page reads the same,
// with every board shown in its stored order.
(function () {
  "use strict";
  var source = document.getElementById("leaderboard-data");
  var form = document.getElementById("board-filters");
  if (!source || !form) { return; }
  var rows = JSON.parse(source.textContent);
  var boards = Array.prototype.slice.call(document.querySelectorAll("section.board"));
  var keys = ["dataset", "encoder", "augmentation", "setting", "budget"];
  var choices = {};

  keys.forEach(function (key) {
    var seen = [];
    rows.forEach(function (row) {
      var value = String(row[key]);
      if (seen.indexOf(value) < 0) { seen.push(value); }
    });
    if (seen.length < 2) { return; }
    var label = document.createElement("label");
    label.textContent = key + " ";
    var select = document.createElement("select");
    select.name = key;
    [""].concat(seen).forEach(function (value) {
      var option = document.createElement("option");
      option.value = value;
      option.textContent = value === "" ? "(any)" : value;
      select.appendChild(option);
    });
    select.addEventListener("change", applyFilters);
    label.appendChild(select);
    form.appendChild(label);
    choices[key] = select;
  });
  form.hidden = Object.keys(choices).length === 0;

  function applyFilters() {
    boards.forEach(function (board) {
      var shown = keys.every(function (key) {
        return key === "budget" || !choices[key] || choices[key].value === "" ||
          board.getAttribute("data-" + key) === choices[key].value;
      });
      board.hidden = !shown;
      var budget = choices.budget ? choices.budget.value : "";
      board.querySelectorAll("table.leaderboard tr").forEach(function (tr) {
        Array.prototype.forEach.call(tr.children, function (cell, column) {
          var header = board.querySelectorAll("table.leaderboard thead th")[column];
          var cellBudget = header && header.getAttribute("data-budget");
          cell.hidden = Boolean(budget && cellBudget && cellBudget !== budget);
        });
      });
    });
  }

  function sortValue(row, column) {
    var cell = row.children[column];
    if (column === 0) { return cell.textContent.trim().toLowerCase(); }
    var mean = cell.getAttribute("data-mean");
    return mean === null || mean === "" || isNaN(Number(mean)) ? null : Number(mean);
  }

  function sortBy(table, header, column) {
    var descending = header.getAttribute("aria-sort") !== "descending";
    var body = table.tBodies[0];
    var ordered = Array.prototype.slice.call(body.rows).sort(function (a, b) {
      var x = sortValue(a, column), y = sortValue(b, column);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return (x < y ? -1 : 1) * (descending ? -1 : 1);
    });
    ordered.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("thead th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  document.querySelectorAll("table.leaderboard").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (header, column) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.title = "sort by this column";
      while (header.firstChild) { button.appendChild(header.firstChild); }
      header.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, header, column); });
    });
  });
}());
