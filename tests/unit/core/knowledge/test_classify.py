"""The taxonomy, the shipped corpus and the text classifier (held-out evaluation printed)."""
from __future__ import annotations

import unicodedata
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.knowledge.classify import (
    OUT_OF_SCOPE,
    Example,
    TextClassifier,
    _t2s,
    load_corpus,
    normalise_text,
    split_corpus,
)
from streams.core.knowledge.evaluate import Evaluation, evaluate, near_copies
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


def test_taxonomy_follows_the_national_and_shanghai_classes(kb: Knowledge) -> None:
    """GB/T 30428.2's six 部件 classes and the 事件 classes with Shanghai's 街面治安; >= 100 minor categories."""
    assert len(kb.taxonomy) >= 100
    classes = {(c.class_code, c.class_name) for c in kb.taxonomy}
    components = {name for code, name in classes if code.startswith("B")}
    events = {name for code, name in classes if code.startswith("E")}
    assert components == {"公用设施", "道路交通", "市容环境", "园林绿化", "房屋土地", "其他设施"}
    assert events == {"市容环境", "宣传广告", "施工管理", "街面秩序", "突发事件", "街面治安", "其他事件"}
    per_class = Counter(c.class_code for c in kb.taxonomy)
    assert min(per_class.values()) >= 3, per_class


def _is_traditional(text: str) -> bool:
    return _t2s().convert(text) != text


def test_corpus_covers_every_category(kb: Knowledge) -> None:
    """>= 30 texts per category, written as callers speak: long calls, traditional characters, two issues."""
    examples = load_corpus(DATA_DIR / "corpus", kb.taxonomy)
    by_category: dict[str, list[str]] = {}
    for e in examples:
        by_category.setdefault(e.category, []).append(e.text)
    assert set(by_category) == {c.name for c in kb.taxonomy} | {OUT_OF_SCOPE}
    assert len(by_category[OUT_OF_SCOPE]) >= 100
    assert len({e.text for e in examples}) == len(examples), "duplicate texts in the corpus"
    for name, texts in by_category.items():
        if name == OUT_OF_SCOPE:
            continue
        assert len(texts) >= 30, (name, len(texts))
        assert any(len(t) >= 40 for t in texts), f"{name}: no long call"
        assert any(_is_traditional(t) for t in texts), f"{name}: no text in traditional characters"
        assert any("另外" in t or "顺便" in t for t in texts), f"{name}: no call raising two issues"


@pytest.fixture(scope="module")
def evaluation(kb: Knowledge) -> Evaluation:
    examples = load_corpus(DATA_DIR / "corpus", kb.taxonomy)
    return evaluate(kb.taxonomy, examples, kb.kb.keywords, kb.kb.context_cues, Settings().triage_confidence)


def test_held_out_accuracy_and_macro_f1(evaluation: Evaluation) -> None:
    print(f"\nclassifier held-out: n_train={evaluation.n_train} n_test={evaluation.n_test} "
          f"categories={evaluation.n_categories} accuracy={evaluation.accuracy:.4f} macro_f1={evaluation.macro_f1:.4f} "
          f"auto_routed={evaluation.auto_routed}/{evaluation.n_test} "
          f"precision_when_auto={evaluation.precision_when_auto:.4f} train={evaluation.train_seconds:.2f}s")
    assert evaluation.n_categories >= 100
    assert evaluation.accuracy >= 0.90
    assert evaluation.macro_f1 >= 0.88
    assert evaluation.precision_when_auto >= 0.93
    out_of_scope = evaluation.score(OUT_OF_SCOPE)
    assert out_of_scope is not None and out_of_scope.recall >= 0.9 and out_of_scope.precision >= 0.9


def test_no_held_out_text_is_a_near_copy_of_a_training_text(evaluation: Evaluation) -> None:
    assert evaluation.near_copies == [], evaluation.near_copies[:5]


def test_near_copy_check_finds_paraphrases() -> None:
    train = [Example("楼上邻居半夜很吵，噪音太大睡不着", "噪声扰民", "a:1"), Example("路灯坏了", "路灯损坏", "a:2")]
    test = [Example("楼上邻居半夜很吵，噪音太大了睡不着", "噪声扰民", "b:1"), Example("井盖没了", "井盖缺失", "b:2")]
    found = near_copies(train, test)
    assert [(c.train_text, c.test_text) for c in found] == [(train[0].text, test[0].text)]


def test_split_keeps_near_copies_on_one_side() -> None:
    texts = [f"第{i}号楼道里堆满了旧家具和纸箱，人都过不去" for i in range(8)] + \
            ["马路上井盖没了", "路灯坏了好几天", "小区里有人私装地锁", "楼下饭店油烟很大"]
    train, test = split_corpus([Example(t, "x", f"f:{i}") for i, t in enumerate(texts)], held_out_share=0.25)
    assert near_copies(train, test) == []
    assert len(test) >= 3 and len(train) >= 3


@pytest.mark.parametrize("text", ["小区门口有人卖假证", "我想问一下社保怎么交", "你好，请问今天天气怎么样",
                                  "网上买的衣服商家不给退款"])
def test_out_of_scope_calls_are_not_forced_into_a_category(kb: Knowledge, text: str) -> None:
    result = kb.classify(text)
    assert result.out_of_scope and result.label == OUT_OF_SCOPE


def test_out_of_scope_rule_never_fires_on_held_out_in_scope_texts(kb: Knowledge) -> None:
    examples = load_corpus(DATA_DIR / "corpus", kb.taxonomy)
    train, test = split_corpus(examples)
    clf = TextClassifier(kb.taxonomy, train, kb.kb.keywords, kb.kb.context_cues)
    wrongly = [e.text for e, r in zip(test, clf.classify_many([e.text for e in test]), strict=True)
               if e.category != OUT_OF_SCOPE and r.out_of_scope]
    assert len(wrongly) <= 2, wrongly


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
    ("我们楼下的配电箱门一直开着，电线都露在外面", "电力设施损坏"),
    ("十字路口的红绿灯全灭了", "交通信号灯故障"),
    ("楼梯的声控灯坏了，晚上上楼看不见", "楼道灯损坏"),
    ("楼上空调外机的架子锈得快掉了", "空调外机支架锈蚀"),
    ("马路边自来水管爆了，水一直往外冒", "自来水管爆裂"),
    ("楼道里一股很浓的煤气味", "燃气泄漏"),
    ("有人从楼上往下扔酒瓶", "高空抛物"),
    ("阳台外面有个好大的马蜂窝", "马蜂窝"),
    ("路边有辆车停了一年多没动过，轮胎都瘪了", "僵尸车"),
    ("楼上那套房子被改成公司办公了", "居改非"),
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
