"""The taxonomy, the shipped corpus and the text classifier (held-out evaluation printed)."""
from __future__ import annotations

import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import accuracy_score, f1_score

from streams.core.knowledge.classify import TextClassifier, load_corpus, normalise_text, split_corpus
from streams.core.knowledge.knowledge import DATA_DIR, Knowledge
from streams.settings import Settings

REQUIRED = ("群租 违法搭建 私装地锁 损坏房屋承重结构 暴露垃圾 跨门经营 占道经营 无照经营 非法小广告 噪声扰民 餐饮油烟 "
            "施工扰民 工地扬尘 道路积水 电动车进电梯 飞线充电 人身安全险情 历史建筑振动超限 历史建筑倾斜超限 "
            "历史建筑擅自装修 人群聚集超限 机动车乱停放 非机动车乱停放 违规户外广告 井盖缺失 井盖破损 路灯损坏 "
            "道路破损 绿化损坏 消防设施损坏").split()


@pytest.fixture(scope="module")
def kb() -> Knowledge:
    return Knowledge.load()


def test_taxonomy_has_the_required_categories(kb: Knowledge) -> None:
    assert len(REQUIRED) == 30
    names = {c.name for c in kb.taxonomy}
    assert set(REQUIRED) <= names
    for c in kb.taxonomy:
        assert c.code[0] in "BE" and len(c.code) == 5 and c.code[1:].isdigit()
        assert c.kind == {"B": "部件", "E": "事件"}[c.code[0]]
        assert c.name_en and c.urgency in ("normal", "urgent", "emergency")
    assert kb.category("E0601").name == "群租" and kb.category("群租").code == "E0601"
    assert kb.category("e0601").code == "E0601"
    assert kb.category("不存在") is None


def test_corpus_has_30_texts_per_category(kb: Knowledge) -> None:
    examples = load_corpus(DATA_DIR / "corpus", kb.taxonomy)
    counts = Counter(e.category for e in examples)
    assert set(counts) == set(REQUIRED)
    assert min(counts.values()) >= 30, counts.most_common()[-3:]
    assert len({e.text for e in examples}) == len(examples), "duplicate texts in the corpus"
    traditional = [e for e in examples if normalise_text(e.text) != e.text.lower()]
    assert len(traditional) >= 30


def test_held_out_accuracy_and_macro_f1(kb: Knowledge) -> None:
    examples = load_corpus(DATA_DIR / "corpus", kb.taxonomy)
    train, test = split_corpus(examples)
    assert not {e.text for e in train} & {e.text for e in test}
    clf = TextClassifier(kb.taxonomy, train, kb.kb.keywords, kb.kb.context_cues)
    results = [clf.classify(e.text) for e in test]
    gold = [e.category for e in test]
    pred = [r.category_name for r in results]
    accuracy = accuracy_score(gold, pred)
    macro_f1 = f1_score(gold, pred, average="macro")
    confident = [r.confidence >= Settings().triage_confidence for r in results]
    right_when_confident = sum(1 for g, p, c in zip(gold, pred, confident) if c and g == p) / max(1, sum(confident))
    print(f"\nclassifier held-out: n_train={len(train)} n_test={len(test)} accuracy={accuracy:.4f} "
          f"macro_f1={macro_f1:.4f} auto_routed={sum(confident)}/{len(test)} precision_when_auto={right_when_confident:.4f}")
    assert accuracy >= 0.90
    assert macro_f1 >= 0.88


def test_classify_simple_and_traditional_alike(kb: Knowledge) -> None:
    simple = kb.classify("楼上邻居装修把承重墙砸了")
    traditional = kb.classify("樓上鄰居裝修把承重牆砸了")
    assert simple.category_name == traditional.category_name == "损坏房屋承重结构"
    assert simple.confidence == traditional.confidence


@pytest.mark.parametrize("text,name", [
    ("我家楼下饭店油烟太大了，窗户都打不开", "餐饮油烟"),
    ("小区里有人私自装了地锁，老人被绊倒了", "私装地锁"),
    ("隔壁一套房子住了十几个人，是二房东搞的隔断", "群租"),
    ("马路上井盖没了，一个大洞", "井盖缺失"),
    ("ＫＴＶ每天晚上吵到兩點，噪音太大", "噪声扰民"),
    ("有人推电瓶车进电梯", "电动车进电梯"),
    ("楼上拉了根电线下来给电瓶车充电", "飞线充电"),
    ("路灯不亮了好几天", "路灯损坏"),
])
def test_typical_complaints(kb: Knowledge, text: str, name: str) -> None:
    result = kb.classify(text)
    assert result.category_name == name
    assert result.confidence >= Settings().triage_confidence


def test_context_read_from_text(kb: Knowledge) -> None:
    assert "compound" in kb.classify("楼上邻居半夜很吵").context
    assert "street_front" in kb.classify("沿街的酒吧音乐太响").context
    assert "stall" in kb.classify("流动摊贩用喇叭叫卖太吵").context
    assert "decibel" in kb.classify("隔壁噪音太大，希望测一下分贝").context
    assert kb.classify("吵").context == []


def test_gibberish_scores_below_the_triage_threshold(kb: Knowledge) -> None:
    result = kb.classify("你好，请问今天天气怎么样")
    assert result.confidence < Settings().triage_confidence


def test_training_is_deterministic(kb: Knowledge) -> None:
    examples = load_corpus(DATA_DIR / "corpus", kb.taxonomy)
    a = TextClassifier(kb.taxonomy, examples, kb.kb.keywords, kb.kb.context_cues).classify("工地晚上还在打桩")
    b = TextClassifier(kb.taxonomy, examples, kb.kb.keywords, kb.kb.context_cues).classify("工地晚上还在打桩")
    assert a == b


# ---------------------------------------------------------------- the normaliser
cjk_and_ascii = st.text(st.characters(codec="utf-8", categories=("Lo", "Nd", "Lu", "Ll", "Po", "Zs")), max_size=40)


@given(cjk_and_ascii)
@settings(max_examples=200, deadline=None)
def test_normalise_is_idempotent(text: str) -> None:
    once = normalise_text(text)
    assert normalise_text(once) == once


@given(st.text(alphabet=st.characters(min_codepoint=0xFF01, max_codepoint=0xFF5E), max_size=30))
@settings(max_examples=200, deadline=None)
def test_full_width_ascii_becomes_half_width(text: str) -> None:
    out = normalise_text(text)
    assert all(ord(ch) < 0x80 for ch in out)
    assert out == unicodedata.normalize("NFKC", text).lower().strip()


def test_traditional_to_simplified() -> None:
    assert normalise_text("噪音擾民，樂山新村　１２號") == "噪音扰民,乐山新村 12号"


def test_conversion_chains_reach_a_fixpoint() -> None:
    assert normalise_text("薴") == normalise_text(normalise_text("薴")) == "苎"


def test_every_cjk_character_normalises_idempotently() -> None:
    ranges = [range(0x3000, 0x3100), range(0x4E00, 0xA000), range(0xF900, 0xFB00), range(0xFF00, 0xFFF0)]
    text = "".join(chr(cp) for r in ranges for cp in r)
    once = normalise_text(text)
    assert normalise_text(once) == once
