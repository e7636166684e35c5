// The Tensor API: lazy building, NumPy broadcasting, errors that name the op
// and the shapes, and results equal to the reference interpreter's.
#include <gtest/gtest.h>

#include <numeric>

#include "tests/testing.h"

namespace kiln {
namespace {

// Interprets the tensor's pending graph: the expected value.
HostTensor reference(const Tensor& t) {
  std::map<std::string, HostTensor> inputs;
  Graph g = t.graph(&inputs);
  return interpret(g, inputs).at(0);
}

void expect_close(const Tensor& t) {
  HostTensor want = reference(t);
  HostTensor got = t.to_host();
  EXPECT_EQ(testing::compare(want, got, testing::tolerance_for(want.dtype)), "");
}

TEST(Tensor, IssueExample) {
  auto a = Tensor::rand({512, 1024}, f32, 1);
  auto b = Tensor::rand({1024, 256}, f32, 2);
  auto y = (a.matmul(b) + 1.0f).relu().sum(1);
  EXPECT_EQ(shape_str(y.shape()), "[512]");
  HostTensor want = reference(y);
  std::vector<float> out = y.to_vector<float>();
  ASSERT_EQ(out.size(), 512u);
  for (int i = 0; i < 512; ++i) EXPECT_NEAR(out[i], want.get(i), 1e-4 * std::max(1.0, std::fabs(want.get(i))));
}

TEST(Tensor, Creation) {
  EXPECT_EQ(Tensor::zeros({2, 3}).to_vector<float>(), std::vector<float>(6, 0));
  EXPECT_EQ(Tensor::ones({4}, i32).to_vector<int>(), std::vector<int>(4, 1));
  EXPECT_EQ(Tensor::full({2}, 2.5, f16).to_vector<float>(), std::vector<float>({2.5f, 2.5f}));
  EXPECT_EQ(Tensor::arange(5, i32).to_vector<int>(), std::vector<int>({0, 1, 2, 3, 4}));
  auto v = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(v.transpose().to_vector<float>(), std::vector<float>({1, 4, 2, 5, 3, 6}));
  EXPECT_EQ(Tensor::rand({3}, f32, 9).to_vector<float>(), Tensor::rand({3}, f32, 9).to_vector<float>());
  EXPECT_THROW(Tensor::from_vector<float>({1, 2, 3}, {2, 2}), Error);
}

TEST(Tensor, BroadcastingLikeNumpy) {
  auto a = Tensor::rand({4, 1, 3}, f32, 1);
  auto b = Tensor::rand({5, 1}, f32, 2);
  auto c = a * b + a.exp2() - 0.5;
  EXPECT_EQ(shape_str(c.shape()), "[4, 5, 3]");
  expect_close(c);
}

TEST(Tensor, ShapeErrorsNameTheOpAndShapes) {
  auto a = Tensor::rand({4, 3});
  auto b = Tensor::rand({5, 3});
  try {
    (void)(a + b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[5, 3]"), std::string::npos) << m;
  }
  EXPECT_THROW(a.matmul(b), Error);
  EXPECT_THROW(a.reshape({Dim(5), Dim(2)}), Error);
  EXPECT_THROW(a.sum(2), Error);
  EXPECT_THROW(a.permute({0, 0}), Error);
  EXPECT_THROW(a.slice(0, 3, 9, 0), Error);
  EXPECT_THROW(a.pad({-1, 0}, {0, 0}), Error);
  EXPECT_THROW(a.gather(Tensor::ones({2}, f32)), Error);
  EXPECT_THROW(a.expand({Dim(4), Dim(4)}), Error);
}

TEST(Tensor, DtypeErrors) {
  auto a = Tensor::rand({3}, f32);
  auto b = Tensor::rand({3}, i32);
  try {
    (void)(a + b);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtypes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(b.exp2(), Error);
  EXPECT_THROW(Tensor::rand({3}, boolean).sum(0), Error);
  EXPECT_NO_THROW((a + b.cast(f32)).realize());
}

TEST(Tensor, EveryDtypeRoundTripsThroughCast) {
  for (DType t : kAllDTypes) {
    SCOPED_TRACE(dtype_name(t));
    auto x = Tensor::rand({64}, t, 4);
    expect_close(x.cast(f32) * 2.0);
    expect_close((x.cast(f32) * 3.7).cast(t));
  }
}

TEST(Tensor, ReductionsAndComposites) {
  auto x = Tensor::rand({6, 9, 4}, f32, 3);
  expect_close(x.sum(1));
  expect_close(x.sum({0, 2}, true));
  expect_close(x.sum());
  expect_close(x.max(-1));
  expect_close(x.mean(0));
  expect_close(x.softmax(1));
  expect_close(x.silu());
  expect_close(x.log());
  auto s = x.softmax(-1).sum(-1).to_vector<float>();
  for (float v : s) EXPECT_NEAR(v, 1.0f, 1e-5);
}

TEST(Tensor, MovementViews) {
  auto x = Tensor::rand({4, 6, 5}, f32, 8);
  expect_close(x.reshape({Dim(-1), Dim(5)}) * 2.0);
  expect_close(x.permute({2, 0, 1}).reshape({Dim(5), Dim(24)}));
  expect_close(x.slice(1, 1, -1, 2).flip({0}));
  expect_close(x.slice(2, -3, 100));
  expect_close(x.pad({1, 0, 0}, {0, 2, 1}, 3.0));
  expect_close(x.gather(Tensor::from_vector<int>({3, 0, -1, 2}, {2, 2}, i32), 1));
  expect_close(x.expand({Dim(2), Dim(4), Dim(6), Dim(5)}));
}

TEST(Tensor, MatmulShapes) {
  auto m = Tensor::rand({3, 4}, f32, 1);
  auto v = Tensor::rand({4}, f32, 2);
  EXPECT_EQ(shape_str(m.matmul(v).shape()), "[3]");
  EXPECT_EQ(shape_str(Tensor::rand({3}).matmul(m).shape()), "[4]");
  EXPECT_EQ(shape_str(v.matmul(v).shape()), "[]");
  auto batched = Tensor::rand({2, 1, 3, 4}).matmul(Tensor::rand({5, 4, 6}));
  EXPECT_EQ(shape_str(batched.shape()), "[2, 5, 3, 6]");
  expect_close(m.matmul(v));
  expect_close(v.matmul(v));
  expect_close(batched);
}

TEST(Tensor, WhereAndComparisons) {
  auto a = Tensor::rand({5, 7}, f32, 1);
  auto b = Tensor::rand({7}, f32, 2);
  expect_close(Tensor::where(a.lt(b), a, b));
  expect_close(a.eq(a).cast(i32).sum(1));
  expect_close(a.maximum(b).minimum(a.scalar(0.25)));
}

TEST(Tensor, RealizedTensorsFeedNewGraphs) {
  auto a = Tensor::rand({100}, f32, 1);
  auto b = (a * 3.0).realize();
  auto c = b + a;
  std::vector<float> av = a.to_vector<float>(), cv = c.to_vector<float>();
  for (int i = 0; i < 100; ++i) EXPECT_NEAR(cv[i], 4 * av[i], 1e-5);
}

TEST(Tensor, LongChainsDoNotOverflowTheStack) {
  auto x = Tensor::rand({8}, f32, 1);
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = y + 1.0;
  EXPECT_NO_THROW(y.graph());
}

}  // namespace
}  // namespace kiln
