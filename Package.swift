// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "relaxft",
    products: [
        .executable(name: "relaxft", targets: ["relaxft"]),
        .library(name: "Tape", targets: ["Tape"]),
    ],
    targets: [
        // OpenBLAS (cblas.h) and LAPACKE from Debian's libopenblas-dev and liblapacke-dev.
        .systemLibrary(name: "CLinalg", path: "Sources/CLinalg", providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        .target(name: "Tape", dependencies: ["CLinalg"]),
        .executableTarget(name: "relaxft", dependencies: ["Tape"]),
        .executableTarget(name: "relaxft-bench", dependencies: ["Tape", "CLinalg"], path: "Sources/Bench"),
        .testTarget(name: "TapeTests", dependencies: ["Tape"]),
    ]
)
