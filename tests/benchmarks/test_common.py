"""benchmarks/common.py: combo strings name every caption-proxy encoder, BM25 as the cross-modal score only."""
import pytest

from benchmarks.caption_proxy_data import parse_combos
from benchmarks.common import ENCODERS, parse_combo


def test_combos_name_every_encoder_and_bm25_only_as_cross():
    assert ENCODERS == ("minilm", "tfidf", "lsa", "bm25")
    assert parse_combo("bm25:minilm") == ("bm25", "minilm")
    assert parse_combo(" lsa : minilm ") == ("lsa", "minilm")
    assert parse_combos("bm25:minilm,lsa:minilm,tfidf:tfidf,tfidf:minilm,minilm:lsa,bm25:tfidf") == [
        ("bm25", "minilm"), ("lsa", "minilm"), ("tfidf", "tfidf"), ("tfidf", "minilm"), ("minilm", "lsa"),
        ("bm25", "tfidf")]
    with pytest.raises(ValueError, match=r"--combo: expected CROSS:INTRA pairs of \['minilm', 'tfidf', 'lsa', "
                                         r"'bm25'\], got 'bert:minilm'"):
        parse_combo("bert:minilm")
    with pytest.raises(ValueError, match="--combos: expected CROSS:INTRA"):
        parse_combos("minilm")
    with pytest.raises(ValueError, match="--combos: 'bm25' is a query-document scorer"):
        parse_combos("tfidf:minilm,minilm:bm25")
    with pytest.raises(ValueError, match="repeated"):
        parse_combos("lsa:minilm,lsa:minilm")


def test_parse_list_and_mean_std():
    from benchmarks.common import mean_std, parse_list
    assert parse_list(" 0, 2 ,", "--seeds", int) == [0, 2]
    for text, message in (("", "one or more"), ("1,1", "one or more distinct"), ("x", "comma-separated ints")):
        with pytest.raises(ValueError, match=f"--seeds: expected {message}"):
            parse_list(text, "--seeds", int)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5)) and mean_std([5]) == (5.0, 0.0)


def test_saved_models_are_claimed_reused_and_refused_for_another_run(tmp_path, tiny_splits):
    from benchmarks.common import claim_model_dir, load_finished, model_dir
    from pillargraph.train import fit_reranker
    from tests.helpers.tiny import tiny_builder, tiny_config

    info = {"combo": "tfidf:minilm", "recipe_name": "inductive", "seed": 0, "train_images": 60}
    path = claim_model_dir(tmp_path, "tfidf:minilm", "inductive", 0, info)
    assert path == model_dir(tmp_path, "tfidf:minilm", "inductive", 0) == tmp_path / "tfidf-minilm/inductive/seed0"
    assert load_finished(path) is None  # nothing trained yet
    train, dev, test = tiny_splits
    fitted = fit_reranker(train, dev, tiny_builder(), {"hidden_channels": 16, "heads": 2}, tiny_config(epochs=1),
                          out_dir=path)
    model, state = load_finished(path)
    assert state["fusion"] == fitted.result.fusion and model.fusion_weights == fitted.result.fusion
    assert claim_model_dir(tmp_path, "tfidf:minilm", "inductive", 0, info) == path  # the same run: kept
    with pytest.raises(ValueError, match=r'--models: .* holds a model of another run \(train_images: 60 there, '
                                         r'3000 now\); choose another folder'):
        claim_model_dir(tmp_path, "tfidf:minilm", "inductive", 0, dict(info, train_images=3000), "--models")
    (path / "data.json").unlink()
    with pytest.raises(ValueError, match="without data.json"):
        claim_model_dir(tmp_path, "tfidf:minilm", "inductive", 0, info)


def test_caption_proxy_saves_models_only_where_it_trains_on_flickr30k_train():
    from benchmarks.caption_proxy import build_parser, check_args
    args = build_parser().parse_args(["--protocols", "transfer", "--save-models", "runs/m"])
    with pytest.raises(ValueError, match="--save-models: only the f30k and f30k-coco protocols"):
        check_args(args)
    args = build_parser().parse_args(["--protocols", "f30k", "--save-models", "runs/m", "--epochs", "1",
                                      "--recipes", "inductive,transductive"])
    check_args(args)
    assert args.save_models == "runs/m" and args.recipes == ["inductive", "transductive"]


def test_recorded_arguments_carry_no_machine_paths():
    from benchmarks.common import REPO, portable_file, portable_path

    inside = str(REPO / "benchmarks" / "results" / "x")
    assert portable_path(inside) == "benchmarks/results/x"
    assert portable_path("--out=/scratch/runs/a/b") == "--out=SCRATCH/a/b"
    assert portable_path("syn=/scratch/s5k/train.npz,/scratch/s5k/dev.npz") == "syn=SCRATCH/s5k/train.npz,SCRATCH/s5k/dev.npz"
    assert portable_path("a=b,c") == "a=b,c" and portable_path("runs/x") == "runs/x"
    assert portable_file("/scratch/runs/models") == "SCRATCH/runs/models"
