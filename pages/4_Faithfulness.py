"""Faithfulness: does the map point at what the model actually uses? The paper's metrics on one image."""

import camlib
import pandas as pd
import streamlit as st

import appkit

state = st.session_state
sel = appkit.selection()
model, layer, target, image = sel["model"], sel["layer"], sel["target"], sel["image"]
name = sel["model_name"]

st.title("Faithfulness")
st.markdown("Keep only what the map highlights, or delete it, and watch the model's probability for the target "
            "class (paper Sec. 4.1–4.3). A faithful map keeps the probability when its region is kept and makes "
            "it drop when its region is removed.")
st.caption(f"{image.title} · {model.title} · layer {layer} · class {sel['target_name']}")

st.sidebar.divider()
methods = [m for m in camlib.list_methods() if m != "cam" or model.layer_info(layer).linear_tail]
method = st.sidebar.selectbox("Method", methods, index=methods.index("liftcam"), key="faith_method",
                              format_func=appkit.method_title, persist_state="session")
steps = st.sidebar.select_slider("Insertion/deletion steps", [11, 21, 41], value=41, key="faith_steps",
                                 persist_state="session", help="41 steps: δ = 0, 0.025, …, 1 as in the paper.")

# -- the box for the pointing game ------------------------------------------------------------------
boxes = list(image.boxes)
if boxes:
    box_note = "object box from the sample's annotation"
else:
    width, height = image.size
    with st.sidebar.expander("Object box (for the pointing game)"):
        use_box = st.checkbox("I know where the object is", key=f"box_on_{image.key[:12]}", persist_state="session")
        st.caption(f"Pixels of the original image ({width}×{height}), inclusive corners.")
        c1, c2 = st.columns(2)
        x0 = c1.number_input("x min", 0, width - 1, 0, key=f"box_x0_{image.key[:12]}", persist_state="session")
        y0 = c2.number_input("y min", 0, height - 1, 0, key=f"box_y0_{image.key[:12]}", persist_state="session")
        x1 = c1.number_input("x max", 0, width - 1, width - 1, key=f"box_x1_{image.key[:12]}", persist_state="session")
        y1 = c2.number_input("y max", 0, height - 1, height - 1, key=f"box_y1_{image.key[:12]}", persist_state="session")
    box_note = "box typed in the sidebar"
    if use_box:
        if x0 <= x1 and y0 <= y1:
            boxes = [(int(x0), int(y0), int(x1), int(y1))]
        else:
            st.sidebar.warning("The box needs x min ≤ x max and y min ≤ y max.")

# -- compute ------------------------------------------------------------------------------------------
status = st.empty()
with status.container():
    try:
        progress = appkit.progress_bar(st, appkit.method_title(method)) if method in appkit.SLOW_METHODS else None
        res = appkit.explanation(name, image.key, image.image, method, layer, target, _progress=progress)
        scores = appkit.faithfulness(name, image.key, image.image, method, layer, target, steps,
                                     _saliency=res["saliency"], _progress=appkit.progress_bar(st, "insertion / deletion"))
    except ValueError as exc:
        st.warning(str(exc))
        st.stop()
    except Exception as exc:  # never a traceback on screen
        st.error(f"{appkit.method_title(method)} failed: {type(exc).__name__}: {exc}")
        st.stop()
status.empty()
model_boxes = image.with_boxes(boxes).boxes_at(*model.input_size)
epg = appkit.pointing_game(res["saliency"], model_boxes)

# -- explanation images (Eq. 10) -------------------------------------------------------------------------
e, e_inv = appkit.explanation_images(image.image, res["saliency"])
shown_boxes = image.with_boxes(boxes).boxes_at(image.image.height, image.image.width)
c1, c2, c3, c4 = st.columns(4)
c1.image(appkit.draw_boxes(image.image, shown_boxes), width="stretch",
         caption=f"x · p = {appkit.fmt_percent(scores['Y'])}" + (f" · {box_note}" if boxes else ""))
c2.image(appkit.overlay_image(image.image, res["saliency"], 0.5), width="stretch",
         caption=f"{appkit.method_title(method)} map s(u(L))")
c3.image(e, width="stretch", caption=f"e = s(u(L)) ∘ x · p = {appkit.fmt_percent(scores['O'])}")
c4.image(e_inv, width="stretch", caption=f"e_inv = (1 − s(u(L))) ∘ x · p = {appkit.fmt_percent(scores['D'])}")

st.subheader("Scores for this image")
m = st.columns(6)
m[0].metric("IC (Eq. 11)", "yes" if scores["ic"] >= 0.5 else "no", help="Increase in Confidence: is p(e) > p(x)? Higher is better.")
m[1].metric("AD (Eq. 12)", appkit.fmt_percent(scores["ad"]), help="Average Drop: max(0, Y − O)/Y. Lower is better.")
m[2].metric("ADD (Eq. 13)", appkit.fmt_percent(scores["add"]), help="Average Drop in Deletion: (Y − D)/Y. Higher is better.")
m[3].metric("Insertion AUC", appkit.fmt(scores["ins_auc"], 3), help="Higher is better.")
m[4].metric("Deletion AUC", appkit.fmt(scores["del_auc"], 3), help="Lower is better.")
m[5].metric("Energy in box (Eq. 14)", appkit.fmt_percent(epg) if epg is not None else "no box",
            help="Share of the map's energy inside the object box. Higher is better.")

st.plotly_chart(appkit.insertion_deletion_figure(scores), key="insdel")
st.caption("Insertion: start from a black image and put back the most salient pixels first. Deletion: start from the "
           "image and blacken the most salient pixels first. The paper (Table 4) averages these AUCs over 1,000 images.")

# -- all methods ----------------------------------------------------------------------------------------
if st.toggle("Compare the methods chosen on the Explain page", key="faith_compare", persist_state="session",
             help="Runs the same metrics for each method (cached); slow methods take a while the first time."):
    rows = []
    status = st.empty()
    with status.container():
        for other in state.get("methods") or appkit.DEFAULT_METHODS:
            try:
                progress = appkit.progress_bar(st, appkit.method_title(other)) if other in appkit.SLOW_METHODS else None
                r = appkit.explanation(name, image.key, image.image, other, layer, target, _progress=progress)
                s = appkit.faithfulness(name, image.key, image.image, other, layer, target, steps,
                                        _saliency=r["saliency"], _progress=appkit.progress_bar(st, f"{appkit.method_title(other)} metrics"))
                other_epg = appkit.pointing_game(r["saliency"], model_boxes)
            except Exception as exc:  # e.g. CAM on a nonlinear tail: skip with a note
                st.warning(f"{appkit.method_title(other)}: {exc}")
                continue
            rows.append({"method": appkit.method_title(other), "p(e)": s["O"], "p(e_inv)": s["D"],
                         "AD %": 100 * s["ad"], "ADD %": 100 * s["add"], "insertion AUC": s["ins_auc"],
                         "deletion AUC": s["del_auc"]} | ({} if other_epg is None else {"energy in box %": 100 * other_epg}))
    status.empty()
    if rows:
        st.dataframe(pd.DataFrame(rows).set_index("method"), column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in ("p(e)", "p(e_inv)", "insertion AUC", "deletion AUC")
        } | {c: st.column_config.NumberColumn(format="%.1f") for c in ("AD %", "ADD %", "energy in box %")})
        st.caption("One image is an anecdote: the paper's tables average over 1,000 images (`python -m camlib.bench`).")
